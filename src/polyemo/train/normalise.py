"""Feature normalisation before a head, by name (what a report or a model card says):

* ``none``: the features as the encoder gives them.
* ``global``: mean/std per layer and dimension, fitted on the TRAINING split only.
* ``utterance``: each utterance on its own, over its frames (``axis="frames"``, per
  dimension, i.e. CMVN) or over its feature dimensions (``axis="features"``, per frame or
  per pooled vector); needs no speakers and no fitting.
* ``test-speaker`` (alias ``speaker``): each speaker's features are standardised with that
  speaker's own mean/std, computed from all of their (unlabelled) features in the split
  being transformed -- the training speakers in training, the test speakers at test time.
  The idea is the unlabelled speaker adaptation of the PolEval 2025 winner. No labels are
  used, but it is *transductive*: a test clip's features depend on every other test clip
  of its speaker, which flatters corpora whose speakers act every emotion equally often.
  Speakers with fewer than ``min_utterances`` utterances in a call (or unknown speakers)
  fall back to statistics stored for that speaker by an earlier call, else to the global
  training statistics.
* ``enrolled-speaker``: what a deployed system can do. Each speaker's statistics come from
  ``enrol`` (k) enrolment clips of theirs; in an experiment a test speaker's enrolment clips
  only feed the statistics and are not scored. :func:`enrolment_rows` chooses them, per
  speaker, reproducibly from the seed (a speaker with ``n <= k`` clips gives ``n - 1``, so
  at least one clip stays to be scored; one with a single clip falls back to the global
  training statistics). Training and validation speakers get their statistics from k clips
  of theirs chosen the same way (matched conditions). ``transform(data)`` picks the
  enrolment rows inside ``data``; ``transform(data, enrol=other)`` takes them from ``other``.

:func:`describe_normalisation` gives each name's description for reports and cards.
Statistics are per layer and dimension, computed in float64 over pooled rows or over all
valid frames. Every normaliser saves and loads its statistics as arrays (``.npz``), so the
same transform runs at prediction time.
"""

from __future__ import annotations

import os
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import ClassVar, Literal

from typing import TYPE_CHECKING

import numpy as np

from polyemo.io import atomic_path

if TYPE_CHECKING:  # not imported at run time: predicting loads this module, and pandas costs a cold start
    from polyemo.train.data import SplitData

NormalisationKind = Literal["none", "global", "utterance", "test-speaker", "enrolled-speaker",
                            "corpus-standardised", "speaker-standardised"]
#: every accepted name, aliases included
NORMALISATION_NAMES: tuple[str, ...] = ("none", "global", "utterance", "test-speaker", "enrolled-speaker",
                                        "corpus-standardised", "speaker-standardised", "speaker")
#: old names that still resolve
NORMALISATION_ALIASES: dict[str, str] = {"speaker": "test-speaker"}
#: default number of enrolment clips per speaker (``enrolled-speaker``)
DEFAULT_ENROL = 5
_DESCRIPTIONS: dict[str, str] = {
    "none": "no normalisation",
    "global": "mean/std of the training split",
    "utterance": "each utterance standardised on its own",
    "test-speaker": "transductive, unlabelled: statistics of all of each test speaker's clips",
    "enrolled-speaker": "statistics of {k} enrolment clips per speaker, excluded from scoring",
    "corpus-standardised": "training rows standardised per training corpus; any other corpus: training mean/std",
    "speaker-standardised": "training rows standardised per training speaker; any other speaker: training mean/std",
}
_TINY = 1e-8


def resolve_normalisation(name: str) -> str:
    """The current name of a normalisation (``speaker`` -> ``test-speaker``); raises for unknown."""
    name = str(name)
    name = NORMALISATION_ALIASES.get(name, name)
    if name not in _DESCRIPTIONS:
        raise ValueError(f"unknown normalisation {name!r}; use {', '.join(_DESCRIPTIONS)} (speaker = test-speaker)")
    return name


def describe_normalisation(name: str, enrol: int | None = None) -> str:
    """``test-speaker (transductive, unlabelled: ...)``: the name and what its statistics are.

    ``enrol``: the enrolment clips per speaker of ``enrolled-speaker`` (default 5)."""
    name = resolve_normalisation(name)
    text = _DESCRIPTIONS[name].format(k=DEFAULT_ENROL if enrol is None else enrol)
    return f"{name} ({text})"


def enrolment_rows(speakers, k: int, seed: int) -> np.ndarray:
    """Boolean mask over rows: per known speaker, ``min(k, n - 1)`` of their ``n`` rows.

    The choice for a speaker depends only on the seed, the speaker's name and the order of
    that speaker's rows, not on the other speakers in ``speakers``, so the same test rows
    give the same enrolment clips wherever they are chosen. Unknown speakers get none."""
    if k < 1:
        raise ValueError(f"enrolment needs k >= 1 clips per speaker, got {k}")
    speakers = np.asarray(speakers if speakers is not None else [], dtype=object)
    mask = np.zeros(len(speakers), dtype=bool)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, speaker in enumerate(speakers):
        if not _is_unknown(speaker):
            groups[str(speaker)].append(i)
    for speaker, rows in groups.items():
        count = min(k, len(rows) - 1)
        if count > 0:
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(speaker.encode())])
            mask[np.asarray(rows)[rng.choice(len(rows), size=count, replace=False)]] = True
    return mask


def _safe_std(std: np.ndarray) -> np.ndarray:
    # Constant dimensions keep scale 1 (as scikit-learn's StandardScaler does).
    return np.where(std < _TINY, 1.0, std)


def moments(features, index: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and std (L, D) over the pooled rows or all frames of ``index``, and the unit count."""
    if isinstance(features, np.ndarray):
        x = features if index is None else features[np.asarray(list(index), dtype=np.int64)]
        if len(x) == 0:
            raise ValueError("no rows to compute statistics from")
        x = x.astype(np.float64)
        return x.mean(0), x.std(0), len(x)
    rows = range(len(features)) if index is None else index
    total = total_sq = None
    count = 0
    for i in rows:
        f = np.asarray(features[i], dtype=np.float64)  # (L, T, D)
        s, ss = f.sum(1), (f * f).sum(1)
        total = s if total is None else total + s
        total_sq = ss if total_sq is None else total_sq + ss
        count += f.shape[1]
    if count == 0:
        raise ValueError("no frames to compute statistics from")
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return mean, np.sqrt(var), count


def _apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise pooled rows (N, L, D) with (L, D) or (N, L, D) statistics."""
    return ((x - mean) / _safe_std(std)).astype(np.float32)


def _apply_frames(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise one utterance's frames (L, T, D) with (L, D) statistics."""
    return ((x - mean[:, None, :]) / _safe_std(std)[:, None, :]).astype(np.float32)


def _is_unknown(speaker) -> bool:
    if speaker is None or (isinstance(speaker, str) and speaker == ""):
        return True
    try:  # NaN, pd.NA, pd.NaT and numpy missing values without importing pandas
        return bool(speaker != speaker) or type(speaker).__name__ in ("NAType", "NaTType")
    except TypeError:  # pd.NA refuses bool()
        return True


def _standardise_rows(data: SplitData, chosen: list[tuple[np.ndarray, np.ndarray]]) -> SplitData:
    """Standardise row i of ``data`` with the statistics ``chosen[i]``."""
    if data.is_frames:
        return data.with_features([_apply_frames(f, *chosen[i]) for i, f in enumerate(data.features)])
    means = np.stack([c[0] for c in chosen]) if chosen else np.zeros((0,) + data.features.shape[1:])
    stds = np.stack([c[1] for c in chosen]) if chosen else np.ones((0,) + data.features.shape[1:])
    return data.with_features(_apply(data.features, means, stds))


def _speaker_groups(speakers, keep: np.ndarray | None = None) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    if speakers is not None:
        for i, speaker in enumerate(speakers):
            if not _is_unknown(speaker) and (keep is None or keep[i]):
                groups[str(speaker)].append(i)
    return groups


class Normaliser:
    """Base: ``fit`` on training data, ``transform`` any split, ``save``/``load`` statistics."""

    kind: ClassVar[str] = ""

    def fit(self, train: SplitData) -> Normaliser:
        return self

    def transform(self, data: SplitData) -> SplitData:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def save(self, path: str | os.PathLike[str]) -> None:
        arrays = {"kind": np.array(self.kind), **self.state()}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Normaliser:
        try:
            with np.load(path, allow_pickle=False) as archive:
                state = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a normaliser statistics file ({error})") from error
        kind = str(state.pop("kind", ""))
        if kind not in NORMALISERS:
            raise ValueError(f"{path}: unknown normaliser kind {kind!r}")
        normaliser = NORMALISERS[kind].__new__(NORMALISERS[kind])
        normaliser.load_state(state)
        return normaliser

    def describe(self) -> str:
        return describe_normalisation(self.kind)


class GlobalNormaliser(Normaliser):
    kind = "global"

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, train: SplitData) -> GlobalNormaliser:
        self.mean, self.std, _ = moments(train.features)
        return self

    def transform(self, data: SplitData) -> SplitData:
        if self.mean is None:
            raise RuntimeError("GlobalNormaliser is not fitted (fit it on the training split)")
        if data.is_frames:
            return data.with_features([_apply_frames(f, self.mean, self.std) for f in data.features])
        return data.with_features(_apply(data.features, self.mean, self.std))

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.std = state["mean"], state["std"]


class SpeakerNormaliser(Normaliser):
    """``test-speaker``: each speaker standardised with all of their clips in the call."""

    kind = "test-speaker"

    def __init__(self, min_utterances: int = 5) -> None:
        if min_utterances < 1:
            raise ValueError(f"min_utterances must be >= 1, got {min_utterances}")
        self.min_utterances = min_utterances
        self.fallback = GlobalNormaliser()
        #: speaker -> (mean, std, utterances) of the latest call that had enough of them
        self.speaker_stats: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def fit(self, train: SplitData) -> SpeakerNormaliser:
        self.fallback.fit(train)
        return self

    def transform(self, data: SplitData) -> SplitData:
        if self.fallback.mean is None:
            raise RuntimeError("SpeakerNormaliser is not fitted (fit it on the training split)")
        groups: dict[str, list[int]] = defaultdict(list)
        if data.speakers is not None:
            for i, speaker in enumerate(data.speakers):
                if not _is_unknown(speaker):
                    groups[str(speaker)].append(i)
        for speaker, rows in groups.items():
            if len(rows) >= self.min_utterances:
                mean, std, _ = moments(data.features, rows)
                self.speaker_stats[speaker] = (mean, std, len(rows))
        chosen: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(len(data)):
            speaker = None if data.speakers is None else data.speakers[i]
            stats = None if _is_unknown(speaker) else self.speaker_stats.get(str(speaker))
            chosen.append(stats[:2] if stats is not None else (self.fallback.mean, self.fallback.std))
        return _standardise_rows(data, chosen)

    def state(self) -> dict[str, np.ndarray]:
        speakers = sorted(self.speaker_stats)
        shape = self.fallback.mean.shape
        return {
            "min_utterances": np.array(self.min_utterances),
            "mean": self.fallback.mean,
            "std": self.fallback.std,
            "speakers": np.array(speakers, dtype=str),
            "speaker_mean": np.stack([self.speaker_stats[s][0] for s in speakers]) if speakers else np.zeros((0, *shape)),
            "speaker_std": np.stack([self.speaker_stats[s][1] for s in speakers]) if speakers else np.zeros((0, *shape)),
            "speaker_count": np.array([self.speaker_stats[s][2] for s in speakers], dtype=np.int64),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.min_utterances = int(state["min_utterances"])
        self.fallback = GlobalNormaliser()
        self.fallback.load_state(state)
        self.speaker_stats = {
            str(s): (state["speaker_mean"][i], state["speaker_std"][i], int(state["speaker_count"][i]))
            for i, s in enumerate(state["speakers"])
        }


TestSpeakerNormaliser = SpeakerNormaliser


class EnrolledSpeakerNormaliser(Normaliser):
    """``enrolled-speaker``: each speaker standardised with the statistics of ``enrol`` of
    their clips (see the module); speakers without enrolment clips get the training ones."""

    kind = "enrolled-speaker"

    def __init__(self, enrol: int = DEFAULT_ENROL, seed: int = 0) -> None:
        if enrol < 1:
            raise ValueError(f"enrol must be >= 1 clip per speaker, got {enrol}")
        self.enrol = int(enrol)
        self.seed = int(seed)
        self.fallback = GlobalNormaliser()
        #: the enrolment rows of the latest ``transform`` without ``enrol`` (rows of its data)
        self.last_enrolment: np.ndarray | None = None

    def fit(self, train: SplitData) -> EnrolledSpeakerNormaliser:
        self.fallback.fit(train)
        return self

    def enrolment(self, data: SplitData) -> np.ndarray:
        """The rows of ``data`` this normaliser takes its speakers' statistics from."""
        return enrolment_rows(data.speakers if data.speakers is not None else [None] * len(data), self.enrol, self.seed)

    def speaker_statistics(self, enrol: SplitData, rows: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per speaker, mean and std over their enrolment rows (``rows``: a mask over ``enrol``)."""
        return {speaker: moments(enrol.features, index)[:2]
                for speaker, index in _speaker_groups(enrol.speakers, rows).items()}

    def transform(self, data: SplitData, enrol: SplitData | None = None) -> SplitData:
        if self.fallback.mean is None:
            raise RuntimeError("EnrolledSpeakerNormaliser is not fitted (fit it on the training split)")
        if enrol is None:
            self.last_enrolment = self.enrolment(data)
            stats = self.speaker_statistics(data, self.last_enrolment)
        else:
            stats = self.speaker_statistics(enrol)
        fallback = (self.fallback.mean, self.fallback.std)
        chosen = []
        for i in range(len(data)):
            speaker = None if data.speakers is None else data.speakers[i]
            chosen.append(fallback if _is_unknown(speaker) else stats.get(str(speaker), fallback))
        return _standardise_rows(data, chosen)

    def describe(self) -> str:
        return describe_normalisation(self.kind, self.enrol)

    def state(self) -> dict[str, np.ndarray]:
        return {"enrol": np.array(self.enrol), "seed": np.array(self.seed),
                "mean": self.fallback.mean, "std": self.fallback.std}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.enrol, self.seed = int(state["enrol"]), int(state["seed"])
        self.fallback = GlobalNormaliser()
        self.fallback.load_state(state)
        self.last_enrolment = None


class UtteranceNormaliser(Normaliser):
    kind = "utterance"

    def __init__(self, axis: Literal["frames", "features"] = "frames") -> None:
        if axis not in ("frames", "features"):
            raise ValueError(f"utterance normalisation axis must be 'frames' or 'features', got {axis!r}")
        self.axis = axis

    def transform(self, data: SplitData) -> SplitData:
        if not data.is_frames:
            if self.axis == "frames":
                raise ValueError("per-utterance standardisation over frames needs frame-level features; "
                                 "pooled features have no frames (use axis='features')")
            return data.with_features(self._standardise(data.features, axis=-1))
        axis = 1 if self.axis == "frames" else -1
        return data.with_features([self._standardise(f, axis=axis) for f in data.features])

    @staticmethod
    def _standardise(x: np.ndarray, axis: int) -> np.ndarray:
        x = x.astype(np.float64)
        mean = x.mean(axis=axis, keepdims=True)
        std = x.std(axis=axis, keepdims=True)
        return ((x - mean) / _safe_std(std)).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"axis": np.array(self.axis)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.axis = str(state["axis"])


def corpus_of(utt_ids) -> np.ndarray:
    """The corpus of each row from the ``corpus/`` prefix of its utt_id (None without one)."""
    return np.array([str(u).split("/", 1)[0] if u is not None and "/" in str(u) else None
                     for u in (utt_ids if utt_ids is not None else [])], dtype=object)


class TrainingGroupNormaliser(Normaliser):
    """Domain generalisation on the TRAINING side (issue 12): each training corpus
    (``corpus-standardised``) or training speaker (``speaker-standardised``) is standardised
    with its own statistics, fitted on the training rows, so the head learns from rows whose
    corpus/speaker offsets are gone. Rows of any group not seen in ``fit`` -- a held-out
    language, a validation speaker, a deployed recording -- get the global training
    statistics: no target data is used. Groups with fewer than ``min_utterances`` training
    rows fall back to the global statistics as well."""

    kind: ClassVar[str] = ""
    group: ClassVar[str] = ""

    def __init__(self, min_utterances: int = 5) -> None:
        if min_utterances < 1:
            raise ValueError(f"min_utterances must be >= 1, got {min_utterances}")
        self.min_utterances = int(min_utterances)
        self.fallback = GlobalNormaliser()
        self.group_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def groups(self, data: SplitData) -> np.ndarray:
        if self.group == "corpus":
            return corpus_of(data.utt_ids if data.utt_ids is not None else [None] * len(data))
        return np.asarray(data.speakers if data.speakers is not None else [None] * len(data), dtype=object)

    def fit(self, train: SplitData) -> TrainingGroupNormaliser:
        self.fallback.fit(train)
        self.group_stats = {}
        for name, rows in _speaker_groups(self.groups(train)).items():
            if len(rows) >= self.min_utterances:
                self.group_stats[name] = moments(train.features, rows)[:2]
        return self

    def transform(self, data: SplitData) -> SplitData:
        if self.fallback.mean is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted (fit it on the training split)")
        fallback = (self.fallback.mean, self.fallback.std)
        chosen = [fallback if _is_unknown(g) else self.group_stats.get(str(g), fallback) for g in self.groups(data)]
        return _standardise_rows(data, chosen)

    def state(self) -> dict[str, np.ndarray]:
        names = sorted(self.group_stats)
        shape = self.fallback.mean.shape
        return {"min_utterances": np.array(self.min_utterances), "mean": self.fallback.mean, "std": self.fallback.std,
                "groups": np.array(names, dtype=str),
                "group_mean": np.stack([self.group_stats[g][0] for g in names]) if names else np.zeros((0, *shape)),
                "group_std": np.stack([self.group_stats[g][1] for g in names]) if names else np.zeros((0, *shape))}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.min_utterances = int(state["min_utterances"])
        self.fallback = GlobalNormaliser()
        self.fallback.load_state(state)
        self.group_stats = {str(g): (state["group_mean"][i], state["group_std"][i]) for i, g in enumerate(state["groups"])}


class CorpusStandardised(TrainingGroupNormaliser):
    kind = "corpus-standardised"
    group = "corpus"


class SpeakerStandardised(TrainingGroupNormaliser):
    kind = "speaker-standardised"
    group = "speaker"


NORMALISERS: dict[str, type[Normaliser]] = {
    "global": GlobalNormaliser, "utterance": UtteranceNormaliser, "test-speaker": SpeakerNormaliser,
    "enrolled-speaker": EnrolledSpeakerNormaliser,
    "corpus-standardised": CorpusStandardised, "speaker-standardised": SpeakerStandardised,
    "speaker": SpeakerNormaliser,  # statistics files written before the rename
}


def make_normaliser(kind: str, **options) -> Normaliser | None:
    """A fresh normaliser of ``kind`` ("none" gives None; ``speaker`` is ``test-speaker``)."""
    kind = resolve_normalisation(kind)
    if kind == "none":
        return None
    return NORMALISERS[kind](**options)
