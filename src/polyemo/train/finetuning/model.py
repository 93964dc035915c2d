"""Trainable speech encoders and the fine-tuned model: encoder -> pooled hidden state -> head.

:class:`TrainableEncoder` wraps a transformers model so that its hidden states keep their
gradients: :class:`SSLTrainable` (wav2vec 2.0, HuBERT, WavLM, data2vec-audio by path or
hub id; transformers' own forward) and :class:`WhisperTrainable` (Whisper's encoder run on
the real length of the clip, the position table sliced, as
:meth:`polyemo.encoders.whisper.WhisperSpeechEncoder._run_trimmed` does for frozen
features). Both return every hidden state (0 = the input embedding, as polyemo numbers
layers) and each clip's number of valid frames.

:class:`FinetuneModel` mean-pools the chosen hidden state (or every one, for a learned
weighted sum) over valid frames and feeds a :class:`polyemo.heads.HeadModel` with the
``finetune`` head (dropout + linear). Freezing (front-end, first N blocks), LoRA (peft),
gradient checkpointing and the parameter groups of layer-wise learning-rate decay live here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyemo.train.finetuning.settings import FinetuneSettings

FRAME_HOP = 320  # Whisper: 2 mel frames of 10 ms per encoder frame


def masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, F, D) mean over each row's first ``lengths`` frames -> (B, D)."""
    mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
    total = hidden.masked_fill(~mask[..., None], 0.0).sum(1)
    return total / lengths.clamp_min(1)[:, None].to(hidden.dtype)


class TrainableEncoder(nn.Module):
    """A speech encoder whose parameters can be trained; subclasses load one model family."""

    #: hidden states returned (input embedding + one per block)
    num_layers: int
    hidden_size: int
    model_type: str

    def prepare(self, waves: list[np.ndarray]) -> dict[str, Any]:
        """CPU tensors the forward needs (no parameters involved; cacheable)."""
        raise NotImplementedError

    def frontend(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(hidden before block 0, valid frames per row, the blocks' attention argument)."""
        raise NotImplementedError

    def run_blocks(self, hidden: torch.Tensor, context: Any, start: int, stop: int) -> list[torch.Tensor]:
        """Outputs of blocks ``start``..``stop - 1`` (hidden states ``start + 1``..``stop``)."""
        raise NotImplementedError

    def frontend_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def forward(self, inputs: dict[str, Any], last: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        last = self.num_layers - 1 if last is None else last
        hidden, lengths, context = self.frontend(inputs)
        return [hidden, *self.run_blocks(hidden, context, 0, last)], lengths

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.checkpointing = enabled


class SSLTrainable(TrainableEncoder):
    """A wav2vec 2.0-family model (transformers AutoModel) by local path or hub id.

    Input normalisation as :class:`polyemo.encoders.ssl.SSLEncoder`: zero mean, unit variance
    per clip where the model's feature extractor does it (layer-norm front ends); padded
    rows get an attention mask except on group-norm front ends, where transformers takes
    none (there, batches are bucketed by length to keep padding small)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        from polyemo.encoders.hf import quiet_loading
        from polyemo.encoders.ssl import SSL_MODEL_TYPES

        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type not in SSL_MODEL_TYPES:
            raise ValueError(f"{folder}: model type {config.model_type!r} is not a wav2vec2-family encoder")
        with quiet_loading():
            self.model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        # LayerDrop skips blocks at random and SpecAugment masks with numpy's global RNG: both
        # would make runs irreproducible (and DDP ranks disagree); augmentation is ours (audio.py)
        self.model.config.layerdrop = 0.0
        self.model.config.apply_spec_augment = False
        self.model_type = config.model_type
        self.group_norm = getattr(config, "feat_extract_norm", "layer") == "group"
        if (folder / "preprocessor_config.json").is_file():
            extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
            self.do_normalize = bool(getattr(extractor, "do_normalize", False))
        else:
            self.do_normalize = not self.group_norm
        self.num_layers = config.num_hidden_layers + 1
        self.hidden_size = config.hidden_size
        self.checkpointing = False
        # pre-norm ("stable") encoders apply a final layer norm to the last state they return
        self.stable_layer_norm = bool(getattr(config, "do_stable_layer_norm", False))

    def prepare(self, waves: list[np.ndarray]) -> dict[str, Any]:
        lengths = [w.size for w in waves]
        values = torch.zeros(len(waves), max(lengths))
        for row, wave in enumerate(waves):
            x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
            if self.do_normalize:
                x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
            values[row, : x.numel()] = x
        return {"values": values, "samples": torch.tensor(lengths)}

    def frontend_modules(self) -> list[nn.Module]:
        return [self.model.feature_extractor]

    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def forward(self, inputs: dict[str, Any], last: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        values, samples = inputs["values"], inputs["samples"]
        mask = None
        if not self.group_norm and int(samples.min()) < values.shape[1]:
            mask = (torch.arange(values.shape[1])[None, :] < samples[:, None]).long().to(values.device)
        # stop at hidden state ``last``: the encoder runs only the blocks under it (a pre-norm
        # encoder one more, so that state ``last`` is the raw block output a full run returns)
        layers = self.model.encoder.layers
        keep = len(layers) if last is None else min(len(layers), last + int(self.stable_layer_norm))
        if keep < len(layers):
            self.model.encoder.layers = layers[:keep]
        try:
            output = self.model(values, attention_mask=mask, output_hidden_states=True)
        finally:
            self.model.encoder.layers = layers
        lengths = self.model._get_feat_extract_output_lengths(samples).to(values.device)
        return list(output.hidden_states), lengths

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.checkpointing = enabled
        if enabled:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()


class WhisperTrainable(TrainableEncoder):
    """Whisper's encoder (transformers WhisperModel's), run on the clip's real length.

    The log-mel of each clip is computed at its own length (padded to an even number of
    mel frames); the sinusoidal position table is sliced to the frames present and
    padded frames of a ragged batch are masked as attention keys, so a clip's output does
    not depend on what it is batched with."""

    model_type = "whisper"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        from transformers import AutoConfig, WhisperFeatureExtractor, WhisperModel

        from polyemo.encoders.hf import quiet_loading

        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type != "whisper":
            raise ValueError(f"{folder}: model type {config.model_type!r} is not whisper")
        with quiet_loading():
            full = WhisperModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                                attn_implementation="sdpa")
        self.encoder = full.get_encoder()
        del full
        if (folder / "preprocessor_config.json").is_file():
            self.features = WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True)
        else:
            self.features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.max_frames = config.max_source_positions
        self.num_layers = config.encoder_layers + 1
        self.hidden_size = config.d_model
        self.checkpointing = False

    def prepare(self, waves: list[np.ndarray]) -> dict[str, Any]:
        mels = []
        for wave in waves:
            wave = np.asarray(wave, dtype=np.float32)[: self.max_frames * FRAME_HOP]
            remainder = (-wave.size) % FRAME_HOP
            if remainder:
                wave = np.pad(wave, (0, remainder))
            mels.append(self.features(wave, sampling_rate=16_000, padding="longest",
                                      return_tensors="np")["input_features"][0])
        longest = max(m.shape[-1] for m in mels)
        batch = torch.zeros(len(mels), mels[0].shape[0], longest)
        for row, mel in enumerate(mels):
            batch[row, :, : mel.shape[-1]] = torch.from_numpy(mel)
        return {"mels": batch, "frames": torch.tensor([m.shape[-1] // 2 for m in mels])}

    def frontend_modules(self) -> list[nn.Module]:
        return [self.encoder.conv1, self.encoder.conv2, self.encoder.embed_positions]

    def blocks(self) -> nn.ModuleList:
        return self.encoder.layers

    def frontend(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        encoder = self.encoder
        mels = inputs["mels"]
        lengths = inputs["frames"].to(mels.device)
        hidden = nn.functional.gelu(encoder.conv1(mels))
        hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        frames = hidden.shape[1]
        hidden = hidden + encoder.embed_positions.weight[:frames]
        return hidden, lengths, self.attention_mask(lengths, frames)

    @staticmethod
    def attention_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor | None:
        if int(lengths.min()) >= frames:
            return None
        attend = torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
        return attend[:, None, None, :]  # (batch, 1, query, key), True = attend

    def run_blocks(self, hidden: torch.Tensor, context: Any, start: int, stop: int) -> list[torch.Tensor]:
        layers = self.encoder.layers
        states = []
        for index in range(start, stop):
            layer = layers[index]
            trainable = any(p.requires_grad for p in layer.parameters())
            if self.checkpointing and self.training and trainable and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                hidden = checkpoint(layer, hidden, context, use_reentrant=False)
            else:
                hidden = layer(hidden, context)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            states.append(hidden)
        if stop == len(layers) and states:
            states[-1] = self.encoder.layer_norm(hidden)  # the final norm belongs to the last block's output
        return states


def load_trainable_encoder(name: str) -> tuple[TrainableEncoder, Any]:
    """The trainable encoder for a polyemo encoder name, local path or hub id, and where its
    weights came from (:class:`polyemo.encoders.hf.ResolvedModel`; packaged Whisper copies
    resolve to the folder :func:`polyemo.encoders.whisper.packaged_whisper_dir` converts)."""
    import polyemo.encoders.whisper  # noqa: F401  (registers the packaged Whisper folders)
    from polyemo.encoders.hf import resolve_model
    from transformers import AutoConfig

    resolved = resolve_model(name)
    model_type = AutoConfig.from_pretrained(resolved.path, local_files_only=True).model_type
    encoder = WhisperTrainable(resolved.path) if model_type == "whisper" else SSLTrainable(resolved.path)
    return encoder, resolved


class FinetuneModel(nn.Module):
    """Trainable encoder -> mean-pooled hidden state(s) -> HeadModel (``finetune`` head)."""

    def __init__(self, encoder: TrainableEncoder, settings: FinetuneSettings, num_classes: int) -> None:
        super().__init__()
        from polyemo.heads.model import HeadConfig, build_head

        self.encoder = encoder
        self.settings = settings
        if settings.layer == "weighted":
            self.layer_index = None
            self.last = encoder.num_layers - 1
            head_layers, mode = encoder.num_layers, "weighted"
        else:
            index = settings.layer if settings.layer >= 0 else encoder.num_layers + settings.layer
            if not 0 <= index < encoder.num_layers:
                raise ValueError(f"layer {settings.layer} does not exist ({encoder.num_layers} hidden states)")
            self.layer_index = index
            self.last = index
            head_layers, mode = 1, 0
        # the head proper reads pooled hidden states: the linear head (dropout + linear)
        self.head_config = HeadConfig(name="linear", params={"dropout": settings.dropout}, layers=mode)
        self.head = build_head(self.head_config, head_layers, encoder.hidden_size, num_classes)
        self.num_pooled_layers = head_layers
        if settings.standardise:  # fixed statistics (set_standardisation), saved with the trained tensors
            self.register_buffer("pool_shift", torch.zeros(head_layers, encoder.hidden_size))
            self.register_buffer("pool_scale", torch.ones(head_layers, encoder.hidden_size))

    # -- the forward -----------------------------------------------------------------
    def pooled(self, inputs: dict[str, Any], prefix: tuple[torch.Tensor, torch.Tensor, Any] | None = None,
               start: int = 0) -> torch.Tensor:
        """(B, layers the head reads, D): mean over valid frames of the hidden state(s).

        ``prefix``: the hidden state after ``start`` blocks (from a frozen-prefix cache),
        its valid frame counts and attention argument; the remaining blocks run from there."""
        if prefix is None and isinstance(self.encoder, SSLTrainable):
            states, lengths = self.encoder(inputs, self.last)
        else:
            if prefix is None:
                hidden, lengths, context = self.encoder.frontend(inputs)
                states = [hidden, *self.encoder.run_blocks(hidden, context, 0, self.last)]
            else:
                hidden, lengths, context = prefix
                states = [hidden] * (start + 1) + self.encoder.run_blocks(hidden, context, start, self.last)
        if self.layer_index is not None:
            pooled = masked_mean(states[self.layer_index], lengths)[:, None, :]
        else:
            pooled = torch.stack([masked_mean(s, lengths) for s in states], dim=1)
        if self.settings.standardise:
            pooled = (pooled - self.pool_shift) / self.pool_scale
        return pooled

    @torch.no_grad()
    def set_standardisation(self, pooled: torch.Tensor) -> None:
        """Fix the standardisation from raw pooled states (N, layers, D) of training clips."""
        pooled = pooled.double()
        self.pool_shift.copy_(pooled.mean(0).float())
        self.pool_scale.copy_(pooled.std(0, unbiased=False).clamp_min(1e-5).float())

    def forward(self, inputs: dict[str, Any], prefix=None, start: int = 0) -> dict[str, torch.Tensor]:
        return self.head(self.pooled(inputs, prefix, start))

    # -- what trains -----------------------------------------------------------------
    def frozen_blocks(self) -> int:
        """Blocks whose parameters never change (the frozen prefix runs front-end + these)."""
        s = self.settings
        if s.method == "lora":
            return 0
        return min(s.freeze_blocks, len(self.encoder.blocks()))

    def frontend_frozen(self) -> bool:
        s = self.settings
        return s.method == "lora" or s.freeze_frontend or s.freeze_blocks > 0

    def configure_training(self) -> None:
        """Set ``requires_grad``: LoRA adapters (peft) or the unfrozen encoder, and the head;
        blocks above the hidden state the head reads are never used, so never trained."""
        s = self.settings
        blocks = self.encoder.blocks()
        if s.method == "lora":
            self._add_lora()
        for module in self.encoder.frontend_modules():
            for p in module.parameters():
                p.requires_grad_(not self.frontend_frozen() and p.requires_grad)
        for index, block in enumerate(blocks):
            unused = index >= self.last
            for name, p in block.named_parameters():
                if s.method == "lora":
                    p.requires_grad_("lora_" in name and not unused)
                else:
                    p.requires_grad_(index >= self.frozen_blocks() and not unused)
        if s.method == "lora":
            for name, p in self.encoder.named_parameters():
                if "lora_" not in name:
                    p.requires_grad_(False)
        elif isinstance(self.encoder, WhisperTrainable):
            self.encoder.encoder.embed_positions.weight.requires_grad_(False)  # sinusoids, fixed in Whisper
            self.encoder.encoder.layer_norm.requires_grad_(self.last == len(blocks))
        for name, p in self.encoder.named_parameters():
            if name.endswith("masked_spec_embed"):  # SpecAugment's mask vector: unused (it is off)
                p.requires_grad_(False)
        for p in self.head.parameters():
            p.requires_grad_(True)
        if s.gradient_checkpointing:
            self.encoder.set_gradient_checkpointing(True)

    def _add_lora(self) -> None:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as error:  # pragma: no cover - peft is a dependency of the finetune extra
            raise ImportError("LoRA fine-tuning needs peft: pip install 'polyemo[finetune]'") from error
        lora = self.settings.lora
        names = {name.rsplit(".", 1)[-1] for name, _ in self.encoder.named_modules()}
        missing = [t for t in lora.targets if t not in names]
        if missing:
            raise ValueError(f"LoRA targets {missing} are not modules of {self.encoder.model_type} "
                             f"(e.g. {', '.join(sorted(n for n in names if n.endswith('proj'))[:8])})")
        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.targets), bias="none")
        # peft wraps the target Linear layers in place; the module tree is otherwise unchanged
        inject_adapter_in_model(config, self.encoder)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor that training changes (adapters or encoder weights, and the head)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad} | set(self.standardisation_names())
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def standardisation_names(self) -> list[str]:
        return ["pool_shift", "pool_scale"] if self.settings.standardise else []

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        missing = ({n for n, p in self.named_parameters() if p.requires_grad}
                   | set(self.standardisation_names())) - set(state)
        if missing:
            raise KeyError(f"the saved state lacks {len(missing)} trained tensors, e.g. {sorted(missing)[:3]}")
        self.load_state_dict(state, strict=False)

    def parameter_groups(self, lr: float, head_lr: float | None, layer_decay: float,
                         weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: the head at ``head_lr``; block i at ``lr * layer_decay ** (top - i)``
        (top: the block under the hidden state read), the front-end one step below block 0;
        no weight decay on biases, norms and layer weights."""
        blocks = self.encoder.blocks()
        top = self.last  # blocks 0..last-1 are used
        block_of: dict[int, int] = {}
        for index, block in enumerate(blocks):
            for p in block.parameters():
                block_of[id(p)] = index
        groups: dict[tuple[str, bool], dict[str, Any]] = {}

        def add(key: str, rate: float, p: nn.Parameter) -> None:
            decay = p.dim() >= 2
            group = groups.setdefault((key, decay), {"params": [], "lr": rate,
                                                     "weight_decay": weight_decay if decay else 0.0, "name": key})
            group["params"].append(p)

        for p in self.head.parameters():
            if p.requires_grad:
                add("head", head_lr or lr, p)
        for name, p in self.encoder.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) in block_of:
                depth = top - 1 - block_of[id(p)]
                add(f"block{block_of[id(p)]}", lr * layer_decay ** depth, p)
            else:  # front-end, projections, final norm
                is_top = "layer_norm" in name and name.count(".") <= 2
                add("top" if is_top else "frontend", lr if is_top else lr * layer_decay ** top, p)
        return list(groups.values())

    def frozen_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if not p.requires_grad)


def count(parameters) -> int:
    return int(sum(p.numel() for p in parameters))


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
