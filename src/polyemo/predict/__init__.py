"""Emotion prediction with a model bundle: audio in, labels, probabilities and dimensions out.

``polyemo.load(bundle)`` gives a :class:`Recogniser`; ``Recogniser.predict`` takes files,
arrays or lists of either. Inside, every recording becomes one or more *units* (the whole
clip, or its speech segments found by Silero VAD when it is long), units are encoded in
batches, normalised the way the model was trained, and run through the head. Segment
predictions are summarised per recording by the duration-weighted mean of probabilities.

Speaker normalisation at prediction time works on *groups* (``AudioItem.group``: a speaker,
a folder; by default the recording itself): all units of a group with at least the
normaliser's ``min_utterances`` units get that group's statistics; a smaller group (a single
short clip) falls back to the training statistics in the bundle. Each prediction states
which it got (``norm_source``).

Stages, one module each: :mod:`~polyemo.predict.inputs` (files, folders, lists, arrays,
uploads -> items) -> :mod:`~polyemo.predict.engine` (the recogniser; with
:mod:`~polyemo.predict.units` for segmenting and :mod:`~polyemo.predict.normalise` for
groups; :mod:`~polyemo.predict.adapt` for test-time adaptation of a batch) ->
:mod:`~polyemo.predict.results` (what comes back) -> :mod:`~polyemo.predict.outputs`
(resumable JSONL/CSV, terminal lines) and :mod:`~polyemo.predict.plots`;
:mod:`~polyemo.predict.files` runs inputs -> engine -> outputs for ``polyemo predict``. The
server (:mod:`polyemo.serve`) calls the same engine.
"""

from polyemo.predict.adapt import ADAPT_CHOICES, BatchAdaptation, adapt_predictions
from polyemo.predict.engine import OnError, Recogniser, default_model_path, load_model
from polyemo.predict.files import FileRunSummary, predict_files
from polyemo.predict.inputs import (
    AUDIO_EXTENSIONS,
    LIST_SUFFIXES,
    AudioInput,
    AudioItem,
    InputFile,
    SpeakerNorm,
    UnusableUpload,
    audio_items,
    collect_inputs,
    decode_upload,
)
from polyemo.predict.normalise import GroupNormaliser
from polyemo.predict.outputs import ResumableOutput, json_line, partial_path, read_output, readable, write_output
from polyemo.predict.plots import EMOTION_COLOURS, plot_timeline
from polyemo.predict.results import Prediction, SegmentPrediction, prediction_record
from polyemo.predict.units import duration_weighted_mean
from polyemo.segment import VadConfig

__all__ = [
    "ADAPT_CHOICES", "AUDIO_EXTENSIONS", "BatchAdaptation", "EMOTION_COLOURS", "adapt_predictions",
    "LIST_SUFFIXES", "AudioInput", "AudioItem", "FileRunSummary",
    "GroupNormaliser", "InputFile", "OnError", "Prediction", "Recogniser", "ResumableOutput", "SegmentPrediction",
    "SpeakerNorm", "UnusableUpload", "VadConfig", "audio_items", "collect_inputs", "decode_upload",
    "default_model_path", "duration_weighted_mean", "json_line", "load_model", "partial_path", "plot_timeline",
    "predict_files", "prediction_record", "read_output", "readable", "write_output",
]
