"""Test-time adaptation at prediction time (issue 12): the whole input is one unlabelled batch.

``polyemo predict --adapt NAME`` and ``Recogniser.predict(..., adapt=NAME)`` re-make the plain
predictions of a call for the batch of recordings it holds; no label is ever read (there is
none to read: the inputs are paths and waves). Names:

* ``none``: the plain prediction (no target data at all).
* ``prior`` (``prior-em``), ``uniform-prior``, ``tent``: the adapters of
  :mod:`polyemo.train.adaptation` on the call's units. ``prior`` starts from the model's source
  prior (its mean prediction on its training rows, in the bundle's ``adaptation.safetensors``).
  Their settings (``strength`` ...) are the ones the bundle carries -- chosen by an inner
  leave-one-language-out when the run that made the bundle chose them -- else strength 1.0,
  said so in the notes. A batch of fewer recordings than the adapter needs
  (:func:`~polyemo.train.adaptation.min_batch`) keeps the plain predictions, with a note.
* ``enrolled``: per-speaker statistics from ``enrol`` (k) enrolment recordings of each speaker
  (chosen reproducibly, :func:`polyemo.train.normalise.enrolment_rows`; at most all but one):
  the speaker's mean of the normalised features is moved onto the training mean the head saw
  (a shift; a per-dimension spread from a few clips would be noise). Every recording
  of the speaker is predicted with them; the enrolment recordings are predicted too and
  marked (``enrolment``: true). It needs speakers (groups): a list's ``speaker`` column or a
  folder with one sub-folder per speaker.

Each prediction says what was applied (``adaptation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from polyemo.predict.units import Unit

if TYPE_CHECKING:
    from polyemo.bundle import Bundle
    from polyemo.predict.results import Prediction

#: a polyemo.predict.engine.Recogniser (not imported: the engine imports this module)
Recogniser = Any

ADAPT_CHOICES = ("none", "prior", "uniform-prior", "tent", "adabn", "adabn-tent", "enrolled")
#: --adapt name -> adapter of polyemo.train.adaptation
ADAPTER_OF = {"prior": "prior-em", "prior-em": "prior-em", "uniform-prior": "uniform-prior", "tent": "tent",
              "adabn": "adabn", "adabn-tent": "adabn-tent"}
#: adapters that map the batch's feature moments onto the training moments the head saw
MOMENT_ADAPTERS = ("adabn", "adabn-tent")


def resolve_adapt(name: str | None) -> str | None:
    """``None``/``none`` -> None; else the canonical --adapt name (``prior-em`` -> ``prior``)."""
    if name is None or str(name).lower() == "none":
        return None
    key = str(name).lower()
    key = "prior" if key in ("prior-em", "em") else key
    key = "enrolled" if key == "enrolled-speaker" else key
    if key not in ADAPT_CHOICES:
        raise ValueError(f"unknown adaptation {name!r}; use {', '.join(ADAPT_CHOICES)}")
    return key


def adapter_settings(bundle: Bundle, adapter: str) -> tuple[dict[str, Any], str]:
    """The adapter's settings from the bundle and where they came from (for the notes)."""
    spec = bundle.config.adaptation
    if spec is not None and adapter in spec.settings:
        return dict(spec.settings[adapter]), spec.chosen_by
    return {"strength": 1.0}, "default strength 1.0 (the bundle carries no inner choice for this adapter)"


class _BundleHead:
    """The bundle's head as the adapters see an estimator: its torch model, features that
    are already normalised (the recogniser did it), the classes."""

    def __init__(self, recogniser: Recogniser) -> None:
        self.model = recogniser.head
        self.class_names = list(recogniser.classes)
        self.num_classes = len(self.class_names)
        self.train_config = SimpleNamespace(num_threads=None)
        self.head_config = SimpleNamespace(name=recogniser.bundle.config.head.config.get("name"))

    def _prepare(self, batch):
        return batch


@dataclass
class BatchAdaptation:
    """One --adapt choice for a call of :meth:`Recogniser.run` (its units are the batch)."""

    name: str
    #: enrolment recordings per speaker (``enrolled``; default: the bundle's, else 5)
    enrol: int | None = None
    #: what happened, for a person (batch too small, default settings ...)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        resolved = resolve_adapt(self.name)
        if resolved is None:
            raise ValueError("BatchAdaptation needs an adaptation; use None for plain predictions")
        self.name = resolved
        if self.enrol is not None and int(self.enrol) < 1:
            raise ValueError(f"enrol needs k >= 1 clips per speaker, got {self.enrol}")

    def check(self, bundle: Bundle) -> None:
        """Refuse what this bundle cannot do, before anything is encoded."""
        if bundle.config.features.kind != "pooled" and self.name in ("tent", "enrolled", *MOMENT_ADAPTERS):
            raise ValueError(f"{bundle.path}: --adapt {self.name} adapts pooled features; this model reads frames")
        if self.name == "prior" and "source_prior" not in bundle.adaptation_stats:
            raise ValueError(f"{bundle.path}: --adapt prior needs the model's source prior, and this bundle carries "
                             "none (exported before issue 12); export it again from its run")
        if self.name in MOMENT_ADAPTERS and "feature_mean" not in bundle.adaptation_stats \
                and bundle.config.normalisation.mode != "global":
            raise ValueError(f"{bundle.path}: --adapt {self.name} needs the training moments of the "
                             f"{bundle.config.normalisation.mode}-normalised features, and this bundle carries none "
                             "(exported before issue 12); export it again from its run")
        if self.name == "enrolled":
            mode = bundle.config.normalisation.mode
            if mode in ("test-speaker", "enrolled-speaker"):
                raise ValueError(f"{bundle.path}: the model already normalises per speaker ({mode}); predict with "
                                 "speaker groups (--speaker-norm) and --adapt none")
            if "feature_mean" not in bundle.adaptation_stats and mode != "global":
                # with global statistics the head saw mean 0; after any other normaliser the mean is unknown
                raise ValueError(f"{bundle.path}: --adapt enrolled needs the training mean of the {mode}-normalised "
                                 "features, and this bundle carries none (exported before issue 12); export it again "
                                 "from its run")

    def apply(self, recogniser: Recogniser, units: Sequence[Unit], features: list[np.ndarray], groups: list[str],
              predictions: list[Prediction]) -> tuple[np.ndarray, np.ndarray | None]:
        """Adapted probabilities (and dimensions) of the call's units; marks the predictions."""
        recordings = sorted({u.item for u in units})
        if self.name == "enrolled":
            features = self._enrolled(recogniser, units, features, groups, predictions)
            return recogniser._forward(features)
        adapter_name = ADAPTER_OF[self.name]
        probabilities, dimensions = recogniser._forward(features)
        from polyemo.train.adaptation import make_adapter, min_batch

        needed = min_batch(adapter_name, len(recogniser.classes))
        if len(recordings) < needed:
            note = (f"--adapt {self.name}: a batch of {len(recordings)} recording(s) is too small "
                    f"({adapter_name} needs at least {needed}); plain predictions")
            self._note(note)
            self._mark(predictions, recordings, f"none (batch of {len(recordings)} < {needed} recordings)")
            return probabilities, dimensions
        settings, source = adapter_settings(recogniser.bundle, adapter_name)
        adapter = make_adapter(adapter_name, **settings)
        prior = recogniser.bundle.adaptation_stats.get("source_prior")
        adapter.source_prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        if adapter_name == "tent" and "feature_std" in recogniser.bundle.adaptation_stats:
            # tent's shift moves in units of the training spread the head saw
            adapter.train_std = np.asarray(recogniser.bundle.adaptation_stats["feature_std"], dtype=np.float64)
        if adapter_name in MOMENT_ADAPTERS and "feature_mean" in recogniser.bundle.adaptation_stats:
            # no moments with global statistics: the head saw mean 0, std 1 (the adapter's default)
            adapter.train_mean = np.asarray(recogniser.bundle.adaptation_stats["feature_mean"], dtype=np.float64)
            adapter.train_std = np.asarray(recogniser.bundle.adaptation_stats["feature_std"], dtype=np.float64)
        from polyemo.train.data import SplitData

        batch = SplitData(np.stack(features).astype(np.float32))
        adapted = adapter.adapt(_BundleHead(recogniser), batch, np.asarray(probabilities, dtype=np.float64))
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in adapter.params().items())
        self._note(f"--adapt {self.name}: {adapter_name} ({shown}) over a batch of {len(recordings)} recordings; "
                   f"settings: {source}")
        self._mark(predictions, recordings, f"{adapter_name} ({shown}; batch of {len(recordings)} recordings)")
        return adapted.astype(np.float32), dimensions

    # -- enrolled speakers ---------------------------------------------------------------------
    def _enrolled(self, recogniser: Recogniser, units: Sequence[Unit], features: list[np.ndarray], groups: list[str],
                  predictions: list[Prediction]) -> list[np.ndarray]:
        from polyemo.predict.normalise import OWN_RECORDING
        from polyemo.train.normalise import enrolment_rows

        bundle = recogniser.bundle
        stats = bundle.adaptation_stats
        spec = bundle.config.adaptation
        k = int(self.enrol or (spec.enrol if spec is not None else 5))
        shape = features[0].shape
        target_mean = np.asarray(stats.get("feature_mean", np.zeros(shape)), dtype=np.float64)
        if "feature_mean" not in stats:
            self._note("--adapt enrolled: the bundle carries no training feature moments; each speaker is "
                       "centred on 0 (what its globally normalised head saw in training)")
        recordings = sorted({u.item for u in units})
        group_of = {u.item: g for u, g in zip(units, groups)}
        speakers = np.array([None if group_of[r].startswith(OWN_RECORDING) else group_of[r] for r in recordings],
                            dtype=object)
        seed = int(bundle.config.normalisation.params.get("seed", 0) or 0)
        enrolled = dict(zip(recordings, enrolment_rows(speakers, k, seed)))
        out = [np.asarray(f, dtype=np.float64) for f in features]
        counts: dict[str, int] = {}
        for r, s in zip(recordings, speakers):
            if s is not None:
                counts[s] = counts.get(s, 0) + 1
        alone = 0
        for speaker, n in counts.items():
            members = [i for i, u in enumerate(units) if group_of[u.item] == speaker]
            enrol_units = [i for i in members if enrolled[units[i].item]]
            used = len({units[i].item for i in enrol_units})
            if not enrol_units:
                alone += 1
                self._mark(predictions, {units[i].item for i in members},
                           f"none ({speaker}: 1 recording, none to enrol)")
                continue
            # The speaker's mean moves onto the training mean (a shift, per layer and dimension).
            # Not its spread: from a few clips (k=2: one difference per dimension) a per-dimension
            # std is noise, and dividing by it blows single dimensions up.
            mean = np.stack([out[i] for i in enrol_units]).mean(0)
            for i in members:
                out[i] = out[i] - mean + target_mean
            label = f"enrolled ({speaker}: statistics of {used} enrolment recordings of {n}, k={k})"
            self._mark(predictions, {units[i].item for i in members}, label)
        for r, s in zip(recordings, speakers):
            predictions[r].enrolment = bool(enrolled[r])
            if s is None:
                predictions[r].adaptation = "none (no speaker)"
        loose = int(sum(s is None for s in speakers))
        self._note(f"--adapt enrolled: {len(counts)} speakers, k={k} enrolment recordings each (at most all but one; "
                   f"marked enrolment=true, predicted too)"
                   + (f"; {alone} speakers with one recording kept plain predictions" if alone else "")
                   + (f"; {loose} recordings without a speaker kept plain predictions" if loose else ""))
        return [f.astype(np.float32) for f in out]

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @staticmethod
    def _mark(predictions: list[Prediction], recordings, text: str) -> None:
        for r in recordings:
            predictions[r].adaptation = text


def adapt_predictions(recogniser: Recogniser, inputs, adapt: str, *, speakers=None, enrol: int | None = None,
                      sample_rate: int | None = None, segment: bool | None = None) -> list[Prediction]:
    """``Recogniser.predict`` of ``inputs`` as one unlabelled batch adapted by ``adapt`` (see the module)."""
    return recogniser.predict(inputs, sample_rate, speakers, segment=segment, adapt=adapt, enrol=enrol)


def enrolled_groups_required(paths: Sequence[str], groups: Sequence[str | None], source: str) -> None:
    """``--adapt enrolled`` needs speakers: raise a clear error when the input has none."""
    if not any(g is not None for g in groups):
        raise ValueError(f"{source}: --adapt enrolled needs speakers: a list (.csv/.tsv/.parquet) with a 'speaker' "
                         "column, or a folder with one sub-folder per speaker")


def predict_rows(recogniser: Recogniser, features: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities of pre-computed rows (each (L, D), the bundle's layers, before
    normalisation), each row its own group as a single clip is predicted, and the rows as
    the head saw them (normalised)."""
    from polyemo.predict.normalise import own_group

    normalised, _ = recogniser._normaliser(list(features), [own_group(i) for i in range(len(features))])
    probabilities, _ = recogniser._forward(normalised)
    return probabilities, normalised


def adaptation_state_of(recogniser: Recogniser, features: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """What ``--adapt`` needs of a bundle, computed on its TRAINING rows' features (each (L, D),
    the bundle's layers, before normalisation): the model's source prior (its mean prediction on
    them, :func:`polyemo.train.adaptation.model_prior`) and the moments of the features as its
    head sees them. For a bundle exported without them (:func:`polyemo.bundle.add_adaptation_state`)."""
    if not features:
        raise ValueError("adaptation state needs the training rows' features; none given")
    if recogniser.bundle.config.normalisation.mode in ("test-speaker", "enrolled-speaker"):
        raise ValueError(f"{recogniser.bundle.path}: per-speaker normalisation; give the rows' speakers to a run instead")
    probabilities, normalised = predict_rows(recogniser, features)
    prior = np.clip(probabilities.astype(np.float64).mean(0), 1e-12, None)
    x = np.stack(normalised).astype(np.float64)
    return {"source_prior": prior / prior.sum(), "feature_mean": x.mean(0), "feature_std": x.std(0)}
