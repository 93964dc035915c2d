"""Self-supervised waveform encoders from transformers: WavLM, HuBERT, wav2vec 2.0, data2vec-audio.

Input normalisation is the model's own: its ``preprocessor_config.json`` (AutoFeatureExtractor)
when present, else the convention of this model family: zero-mean unit-variance input
exactly for models whose convolutional front end uses layer norm (``feat_extract_norm ==
"layer"``, e.g. wav2vec2-large-lv60, data2vec-audio); group-norm models (wav2vec2-base,
HuBERT-base, WavLM-base) were trained on raw waveforms.

Padding never reaches an utterance's features, and only valid frames
(``_get_feat_extract_output_lengths``) are kept. Layer-norm wav2vec2, HuBERT and WavLM get
padded batches with an attention mask (transformers zeroes padded frames before the single
positional convolution and masks them as attention keys). Group-norm models normalise the
first convolution over the whole time axis, padding included, and data2vec-audio's stack of
positional convolutions carries padding into valid frames, so these only batch utterances
of equal length; others run on their own (tests/encoders check batched == single).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from polyemo.encoders import ENCODERS
from polyemo.encoders.hf import HUB_ALIASES, TransformersEncoder, quiet_loading

# positional convolution stacks that spread padded frames into valid ones
UNMASKABLE_MODEL_TYPES = ("data2vec-audio",)
SSL_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech", "unispeech-sat")


class _EnoughLayers(Exception):
    """Raised by a hook to stop a forward pass once the last layer needed is computed."""


class SSLEncoder(TransformersEncoder):
    """A wav2vec 2.0-family encoder: all hidden states, mean+std pooled over valid frames."""

    numeric_libraries = ("torch", "numpy", "transformers")  # transformers runs the model

    def __init__(self, name: str, *, precision: str | None = "auto", window_seconds: float = 30.0) -> None:
        from transformers import (
            AutoConfig,
            AutoFeatureExtractor,
            AutoModel,
            Wav2Vec2FeatureExtractor,
        )

        super().__init__(name, precision=precision, window_seconds=window_seconds)
        folder = self.resolved.path
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type not in SSL_MODEL_TYPES:
            raise ValueError(f"{folder}: model type {config.model_type!r} is not a wav2vec2-family encoder "
                             f"({', '.join(SSL_MODEL_TYPES)})")
        self.model_type = config.model_type
        with quiet_loading():
            self.model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        self.group_norm = getattr(config, "feat_extract_norm", "layer") == "group"
        # may utterances of different lengths share a padded batch?
        self.pad_batches = not self.group_norm and config.model_type not in UNMASKABLE_MODEL_TYPES
        if (folder / "preprocessor_config.json").is_file():
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        else:
            self.feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=not self.group_norm,
                                                              return_attention_mask=not self.group_norm)
        self.do_normalize = bool(getattr(self.feature_extractor, "do_normalize", False))
        self.num_layers = config.num_hidden_layers + 1
        self.frame_dim = config.hidden_size
        self.pooled_dim = 2 * config.hidden_size
        self.frame_rate = self.sample_rate / math.prod(config.conv_stride)
        # the shortest input that yields one frame: the receptive field of the conv stack
        receptive = 1
        for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
            receptive = (receptive - 1) * stride + kernel
        self.min_samples = receptive

    def identity_options(self) -> dict[str, Any]:
        return {**super().identity_options(), "do_normalize": self.do_normalize}

    def _normalise(self, segment: np.ndarray) -> np.ndarray:
        if segment.size < self.min_samples:
            raise ValueError(f"audio window of {segment.size} samples is shorter than the model's "
                             f"receptive field ({self.min_samples} samples)")
        values = self.feature_extractor(segment, sampling_rate=self.sample_rate, return_tensors="np")["input_values"]
        return np.asarray(values[0], dtype=np.float32)

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        if self.pad_batches:
            return [list(range(len(lengths)))]
        groups: dict[int, list[int]] = defaultdict(list)
        for index, length in enumerate(lengths):
            groups[length].append(index)
        return list(groups.values())

    def _prepare(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        return [self._normalise(s) for s in segments]

    def _hidden_states(self, values: torch.Tensor, mask: torch.Tensor | None, last_layer: int | None) -> list[torch.Tensor]:
        """All hidden states, or with ``last_layer`` the input of block 0 and the outputs of
        blocks 1..last_layer, caught by hooks; the forward is stopped after that block. (Cutting
        the layer list instead would be wrong for stable-layer-norm models, whose last hidden
        state is layer-normed.)"""
        if last_layer is None:
            return list(self.model(values, attention_mask=mask, output_hidden_states=True).hidden_states)
        blocks = self.model.encoder.layers
        states: list[torch.Tensor] = []

        def before_first(module, args, kwargs):
            states.append(args[0] if args else kwargs["hidden_states"])
            if last_layer == 0:
                raise _EnoughLayers

        def after(module, args, output):
            states.append(output[0] if isinstance(output, tuple) else output)
            if len(states) == last_layer + 1:
                raise _EnoughLayers

        handles = [blocks[0].register_forward_pre_hook(before_first, with_kwargs=True)]
        handles += [blocks[i].register_forward_hook(after) for i in range(last_layer)]
        try:
            self.model(values, attention_mask=mask)
        except _EnoughLayers:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(states) != last_layer + 1:
            raise RuntimeError(f"{self.resolved.name}: expected {last_layer + 1} hidden states from hooks, got {len(states)}")
        return states

    def _forward(self, inputs: list[np.ndarray], last_layer: int | None = None) -> list[torch.Tensor]:
        lengths = [x.size for x in inputs]
        results: list[torch.Tensor | None] = [None] * len(inputs)
        for batch in self._batches(lengths):
            longest = max(lengths[i] for i in batch)
            values = torch.zeros(len(batch), longest)
            mask = torch.zeros(len(batch), longest, dtype=torch.long)
            for row, i in enumerate(batch):
                values[row, : lengths[i]] = torch.from_numpy(inputs[i])
                mask[row, : lengths[i]] = 1
            ragged = bool((mask == 0).any())
            hidden = self._hidden_states(values, mask if ragged else None, last_layer)
            frames = self.model._get_feat_extract_output_lengths(torch.tensor([lengths[i] for i in batch]))
            for row, i in enumerate(batch):  # copy only valid frames: (layers, frames, dim)
                results[i] = torch.stack([layer[row, : int(frames[row])] for layer in hidden]).float()
        return results  # type: ignore[return-value]


def _hub_factory(hub_id: str):
    def make(**options) -> SSLEncoder:
        return SSLEncoder(hub_id, **options)

    make.__doc__ = f"{hub_id} from the Hugging Face cache (or the hub when online)"
    return make


for _alias, _hub_id in HUB_ALIASES.items():
    if not _alias.startswith("whisper"):
        ENCODERS.register(_alias)(_hub_factory(_hub_id))
