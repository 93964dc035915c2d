"""One label taxonomy: canonical emotion names, corpus synonyms, named label sets, masks.

Raw corpus labels are normalised to canonical names (``normalise``). A :class:`LabelSet`
then maps canonical names to the classes of an experiment, with merges (calm -> neutral)
and drops. Corpora that cannot produce a class get a class mask, so training across
corpora does not teach "never surprise" from a corpus that has no surprise.

The named set ``native`` is each corpus' own classes after synonym normalisation (EmoDB:
anger, boredom, disgust, fear, happiness, neutral, sadness; RAVDESS: its 8 with calm): it
holds every canonical class but the catch-all ``other``, and an experiment keeps the
classes its data has (:func:`native_classes`). For several corpora it is the union of
their classes, and each corpus' class mask (:func:`class_masks`) holds only its own. It is
the default label set of the in-corpus protocols (:data:`polyemo.experiment.config.NATIVE_PROTOCOLS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field, model_validator

if TYPE_CHECKING:  # pandas is imported where it is used: predicting needs no pandas
    import pandas as pd

CANONICAL: tuple[str, ...] = (
    "anger",
    "boredom",
    "calm",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
    "other",
)

# Synonyms and abbreviations used by corpora and users, lower-case.
SYNONYMS: dict[str, str] = {
    "angry": "anger", "ang": "anger", "anger": "anger", "mad": "anger", "rabbia": "anger",
    "bored": "boredom", "boredom": "boredom", "bor": "boredom",
    "calm": "calm", "cal": "calm",
    "contempt": "contempt", "con": "contempt", "contemptuous": "contempt",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "disgusting": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fea": "fear",
    "happiness": "happiness", "happy": "happiness", "hap": "happiness", "joy": "happiness",
    "excited": "happiness", "exc": "happiness", "gioia": "happiness", "pleasant": "happiness",
    "neutral": "neutral", "neu": "neutral", "neutrality": "neutral",
    "sadness": "sadness", "sad": "sadness", "tristezza": "sadness",
    "surprise": "surprise", "surprised": "surprise", "ps": "surprise", "pleasant_surprise": "surprise",
    "pleasant surprise": "surprise", "sur": "surprise",
    "other": "other", "oth": "other", "xxx": "other",
    # IEMOCAP's frustration has no canonical class.
    "fru": "other", "frustration": "other", "frustrated": "other",
    # Corpus-language names: EMOVO (it), CaFE (fr).
    "disgusto": "disgust", "neutro": "neutral", "paura": "fear", "sorpresa": "surprise",
    "colère": "anger", "colere": "anger", "dégoût": "disgust", "degout": "disgust", "joie": "happiness",
    "neutre": "neutral", "peur": "fear", "tristesse": "sadness",
}


class UnknownLabelError(ValueError):
    pass


def normalise(raw: str) -> str:
    """Canonical name of a raw label (case-insensitive); raises for unknown labels."""
    key = str(raw).strip().lower().replace("-", "_")
    if key in SYNONYMS:
        return SYNONYMS[key]
    key = key.replace("_", " ")
    if key in SYNONYMS:
        return SYNONYMS[key]
    raise UnknownLabelError(f"unknown emotion label {raw!r}; known: {', '.join(CANONICAL)} and synonyms")


#: the label set of an arousal-level target (BAVED): ordered levels, not emotion names
AROUSAL_LEVEL_SET = "arousal_level"
AROUSAL_LEVELS = ("low", "neutral", "high")


class LabelSet(BaseModel):
    """The classes of an experiment: canonical names, merges into them, and drops."""

    name: str = "custom"
    classes: list[str]
    merges: dict[str, str] = Field(default_factory=dict)
    drops: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LabelSet:
        if self.name == AROUSAL_LEVEL_SET:  # BAVED's arousal levels: classes, but not emotions
            unknown = [c for c in self.classes if c not in AROUSAL_LEVELS]
            if unknown or self.merges or self.drops:
                raise ValueError(f"label set {AROUSAL_LEVEL_SET!r} holds only {', '.join(AROUSAL_LEVELS)} "
                                 f"(no merges or drops); got {self.classes}")
            return self
        self.classes = [normalise(c) for c in self.classes]
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"label set {self.name!r} repeats a class: {self.classes}")
        self.merges = {normalise(k): normalise(v) for k, v in self.merges.items()}
        for source, target in self.merges.items():
            if target not in self.classes:
                raise ValueError(f"label set {self.name!r}: merge {source} -> {target} targets no class")
        self.drops = [normalise(d) for d in self.drops]
        return self

    def map(self, label: str | None) -> str | None:
        """The class for a canonical (or raw) label, or None when the set excludes it."""
        if label is None or (isinstance(label, float) and np.isnan(label)):
            return None
        canon = normalise(label)
        if canon in self.drops:
            return None
        canon = self.merges.get(canon, canon)
        return canon if canon in self.classes else None

    def map_series(self, labels: pd.Series) -> pd.Series:
        return labels.map(lambda v: self.map(v) if isinstance(v, str) else None)

    def index(self, label: str) -> int:
        return self.classes.index(label)

    def sources(self, cls: str) -> list[str]:
        """Canonical labels that end up as class ``cls``."""
        return [cls] + [s for s, t in self.merges.items() if t == cls and s not in self.drops]


_EKMAN7 = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]

NAMED_SETS: dict[str, LabelSet] = {
    "ekman7": LabelSet(name="ekman7", classes=_EKMAN7),
    "poleval6": LabelSet(name="poleval6", classes=[c for c in _EKMAN7 if c != "disgust"]),
    "big4": LabelSet(name="big4", classes=["anger", "happiness", "neutral", "sadness"]),
    "all": LabelSet(name="all", classes=list(CANONICAL)),
    # Restricted to the classes the data has by whoever uses it (native_classes, classes_of).
    "native": LabelSet(name="native", classes=[c for c in CANONICAL if c != "other"]),
}


def native_classes(manifest: pd.DataFrame, column: str = "label") -> dict[str, list[str]]:
    """Per corpus, its own classes (canonical names, in :data:`CANONICAL` order, no ``other``)."""
    native = NAMED_SETS["native"]
    out: dict[str, list[str]] = {}
    for corpus, rows in manifest.groupby("corpus", sort=True):
        present = set(native.map_series(rows[column]).dropna())
        out[str(corpus)] = [c for c in native.classes if c in present]
    return out


def native_label_set(manifest: pd.DataFrame, column: str = "label") -> LabelSet:
    """The ``native`` set of a manifest: the union of its corpora's own classes."""
    present = {c for classes in native_classes(manifest, column).values() for c in classes}
    return LabelSet(name="native", classes=[c for c in NAMED_SETS["native"].classes if c in present])


def label_set(spec: str | Mapping | LabelSet) -> LabelSet:
    """A named set (``ekman7``, ``poleval6``, ``big4``, ``all``, ``native``), a mapping, or a LabelSet.

    A mapping may extend a named set: ``{"base": "big4", "merges": {"calm": "neutral"}}``.
    """
    if isinstance(spec, LabelSet):
        return spec
    if isinstance(spec, str):
        if spec not in NAMED_SETS:
            raise KeyError(f"unknown label set {spec!r}; named sets: {', '.join(NAMED_SETS)}")
        return NAMED_SETS[spec].model_copy(deep=True)
    spec = dict(spec)
    base = spec.pop("base", None)
    if base is not None:
        merged = label_set(base).model_dump()
        merged.update({k: v for k, v in spec.items() if v is not None})
        merged.setdefault("name", base)
        return LabelSet(**merged)
    return LabelSet(**spec)


def class_masks(manifest: pd.DataFrame, labels: LabelSet, column: str = "label") -> dict[str, np.ndarray]:
    """Per corpus, a boolean vector over ``labels.classes``: which classes it can produce.

    A corpus can produce a class when any of its rows maps to it.
    """
    masks: dict[str, np.ndarray] = {}
    for corpus, rows in manifest.groupby("corpus", sort=True):
        mapped = set(labels.map_series(rows[column]).dropna())
        masks[str(corpus)] = np.array([c in mapped for c in labels.classes], dtype=bool)
    return masks


def row_masks(manifest: pd.DataFrame, labels: LabelSet, column: str = "label") -> np.ndarray:
    """(rows, classes) mask: each row gets its corpus' class mask."""
    masks = class_masks(manifest, labels, column)
    return np.stack([masks[str(c)] for c in manifest["corpus"]]) if len(manifest) else np.zeros((0, len(labels.classes)), bool)


def encode(labels: LabelSet, values: Iterable[str | None]) -> np.ndarray:
    """Class indices for canonical labels; -1 where the set excludes the label."""
    out = []
    for value in values:
        mapped = labels.map(value) if isinstance(value, str) else None
        out.append(labels.index(mapped) if mapped is not None else -1)
    return np.asarray(out, dtype=np.int64)


def decode_indices(labels: LabelSet, indices: Sequence[int]) -> list[str]:
    return [labels.classes[i] for i in indices]


def gender_codes(values) -> np.ndarray:
    """0 female, 1 male, -1 unknown, from manifest gender values (``f``/``female``, ``m``/``male``)."""
    import pandas as pd

    text = pd.Series(values, dtype="object").astype("string").str.lower().fillna("")
    return np.where(text.isin(["f", "female"]), 0, np.where(text.isin(["m", "male"]), 1, -1)).astype(np.int64)
