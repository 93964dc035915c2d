"""The recogniser of an ensemble bundle: every member's recogniser, one encoder per identity.

Members whose bundles name the same encoder (same weights and options) share one encoder
instance behind a :class:`SharedEncoder`, which computes each recording's features once
and hands the same arrays to every member (each member then takes its own layers,
normaliser and head). Each member predicts every recording as it would alone; the
recordings' (and, where the members agree on them, the segments') probabilities are then
combined by the bundle's fitted rule (:mod:`polyemo.ensemble`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from polyemo.bundle import EnsembleBundle
from polyemo.predict.inputs import AudioInput, AudioItem, audio_items
from polyemo.predict.results import Prediction, SegmentPrediction


class SharedEncoder:
    """An encoder whose ``pooled`` / ``frames`` results are kept per recording, so several
    heads over the same encoder compute its features once. Everything else is the encoder's."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._pooled: dict[str, np.ndarray] = {}
        self._frames: dict[str, Any] = {}
        self.computed = 0  # recordings the encoder actually ran on

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    @staticmethod
    def _key(wave: np.ndarray) -> str:
        array = np.ascontiguousarray(wave)
        return f"{array.dtype}:{array.shape}:" + hashlib.sha1(array.tobytes()).hexdigest()

    def _cached(self, store: dict[str, Any], compute: Callable[[list[np.ndarray]], Any], waves: list[np.ndarray]) -> list:
        keys = [self._key(w) for w in waves]
        missing = [i for i, k in enumerate(keys) if k not in store]
        if missing:
            computed = compute([waves[i] for i in missing])
            self.computed += len(missing)
            for i, value in zip(missing, computed):
                store[keys[i]] = value
        return [store[k] for k in keys]

    def pooled(self, waves: list[np.ndarray]) -> np.ndarray:
        return np.stack(self._cached(self._pooled, lambda w: list(np.asarray(self._encoder.pooled(w))), waves))

    def frames(self, waves: list[np.ndarray]) -> list:
        return self._cached(self._frames, self._encoder.frames, waves)

    def clear(self) -> None:
        self._pooled.clear()
        self._frames.clear()


class EnsembleRecogniser:
    """A loaded ensemble bundle with the interface of :class:`~polyemo.predict.engine.Recogniser`."""

    def __init__(self, bundle: EnsembleBundle, member_factory: Callable[..., Any], load_encoder: Callable[..., Any], *,
                 batch_size: int = 8, precision: str | None = None, encoder: Any = None) -> None:
        from polyemo.ensemble import load_rule

        self.bundle = bundle
        self.rule = load_rule(bundle.rule)
        self.classes = list(bundle.classes)
        self.batch_size = batch_size
        # one encoder per identity (weights + options): loaded once, features computed once
        self.encoders: dict[str, SharedEncoder] = {}
        self.members: dict[str, Any] = {}
        for name in self.rule.members:
            member = bundle.members[name]
            key = _encoder_key(member)
            if key not in self.encoders:
                self.encoders[key] = SharedEncoder(encoder if encoder is not None else load_encoder(member, precision))
            self.members[name] = member_factory(member, self.encoders[key], batch_size=batch_size)
        # dimensions: only where every member predicts the same ones (their mean)
        dims = [tuple(r.dimensions) for r in self.members.values()]
        self.dimensions = list(dims[0]) if len(set(dims)) == 1 else []

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def encoder_name(self) -> str:
        return " + ".join(dict.fromkeys(m.encoder_name for m in self.members.values()))

    @property
    def normalisation(self) -> str:
        return ", ".join(f"{n}: {m.normalisation}" for n, m in self.members.items())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "encoder": self.encoder_name, "ensemble": True, "rule": self.bundle.rule["rule"],
                "rule_params": self.bundle.rule.get("params", {}), "classes": self.classes,
                "dimensions": self.dimensions, "scores": self.bundle.info.get("scores", {}),
                "members": [m.describe() for m in self.members.values()],
                "shared_encoders": len(self.encoders)}

    def __repr__(self) -> str:
        return f"EnsembleRecogniser({self.name!r}, rule={self.bundle.rule['rule']!r}, members={list(self.members)})"

    def predict(self, inputs: AudioInput | Sequence[AudioInput], sample_rate: int | None = None,
                speakers: str | Sequence[str | None] | None = None, *, segment: bool | None = None,
                on_error: str = "raise") -> list[Prediction]:
        items = audio_items(inputs, sample_rate, speakers, segment)
        predictions = self.run(items, on_error="record")
        if on_error == "raise":
            failed = [p for p in predictions if p.error]
            if failed:
                from polyemo.audio import AudioError

                raise AudioError(failed[0].source, failed[0].error or "failed")
        return predictions

    def run(self, items: Sequence[AudioItem], *, on_error: str = "record",
            progress: Callable[[int], None] | None = None) -> list[Prediction]:
        try:
            per_member = [member.run(items, on_error=on_error, progress=progress if i == 0 else None)
                          for i, member in enumerate(self.members.values())]
        finally:
            for encoder in self.encoders.values():
                encoder.clear()
        return [self._combine([preds[i] for preds in per_member], item) for i, item in enumerate(items)]

    def _vector(self, probabilities: dict[str, float]) -> np.ndarray:
        return np.array([[probabilities.get(c, 0.0) for c in self.classes]])

    def _combine(self, outputs: list[Prediction], item: AudioItem) -> Prediction:
        first = outputs[0]
        errors = [p.error for p in outputs if p.error]
        if errors:
            return Prediction(source=first.source, group=first.group, duration=first.duration, error=errors[0])
        combined = self.rule.combine([self._vector(p.probabilities) for p in outputs])
        out = Prediction(source=first.source, group=first.group, duration=first.duration, norm_source=first.norm_source,
                         label=self.classes[int(combined.predictions[0])],
                         probabilities={c: float(v) for c, v in zip(self.classes, combined.probabilities[0])})
        for dim in self.dimensions:
            values = [getattr(p, dim) for p in outputs if getattr(p, dim) is not None]
            if values:
                setattr(out, dim, float(np.mean(values)))
        segments = [p.segments for p in outputs]
        if all(s is not None for s in segments) and len({len(s) for s in segments}) == 1 and segments[0]:
            out.segments = []
            for parts in zip(*segments):
                result = self.rule.combine([self._vector(s.probabilities) for s in parts])
                out.segments.append(SegmentPrediction(
                    start=parts[0].start, end=parts[0].end, label=self.classes[int(result.predictions[0])],
                    probabilities={c: float(v) for c, v in zip(self.classes, result.probabilities[0])}))
        return out


def _encoder_key(bundle: Any) -> str:
    spec = bundle.config.features
    identity = spec.identity
    return f"{spec.encoder}|{identity.get('weights_hash')}|{sorted((identity.get('options') or {}).items())}"
