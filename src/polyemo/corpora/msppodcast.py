"""MSP-Podcast, English podcast speech with crowd-sourced emotion labels.

Layout as released: ``Audios/`` (any depth) and ``Labels/labels_consensus.csv`` with the
columns FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set.

- EmoClass codes: A angry, S sad, H happy, U surprise, F fear, D disgust, C contempt,
  N neutral, O other, X no agreement. ``X`` keeps label NA (the file still carries its
  dimensional labels).
- EmoAct/EmoVal/EmoDom (1-7) are rescaled to 0-1 as arousal/valence/dominance:
  ``(x - 1) / 6``.
- Split_Set -> official_split: Train -> train, Development -> validation, Test1/Test2/...
  -> test.
- SpkrID ``Unknown`` (or empty) gets a pseudo-speaker per file (``unknown-<file>``), so
  unidentified speakers never merge into one fake speaker.
Rows of the label file whose audio is missing are skipped; audio without a label row is
ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe, RecipeError
from polyemo.labels import normalise

CLASSES = {
    "A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear",
    "D": "disgust", "C": "contempt", "N": "neutral", "O": "other", "X": "no agreement",
}
COLUMNS = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
GENDERS = {"male": "m", "female": "f"}


def official_split(value: str) -> str | None:
    value = str(value).strip().lower()
    if value == "train":
        return "train"
    if value in ("development", "dev", "validation"):
        return "validation"
    if re.fullmatch(r"test\d*", value):
        return "test"
    return None


def unit(value) -> float | None:
    value = pd.to_numeric(value, errors="coerce")
    return None if pd.isna(value) else (float(value) - 1.0) / 6.0


@RECIPES.register("msppodcast", "msp-podcast", "msp_podcast")
class MSPPodcast(Recipe):
    name = "msppodcast"
    language = "en"

    def scan(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        found = sorted(root.rglob("labels_consensus.csv"))
        if not found:
            raise RecipeError(f"{root}: no Labels/labels_consensus.csv found")
        table = pd.read_csv(found[0], dtype=str, keep_default_na=False)
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise RecipeError(f"{found[0]}: lacks columns {missing}")
        audio_root = root / "Audios" if (root / "Audios").is_dir() else root
        audio = {p.stem: p for p in self.audio_files(audio_root)}
        rows = []
        for number, record in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
            stem = Path(record["FileName"].strip()).stem
            if stem not in audio:
                continue
            code = record["EmoClass"].strip().upper()
            if code not in CLASSES:
                raise RecipeError(f"{found[0]}: line {number} ({stem}): unknown EmoClass {code!r}; known: {', '.join(CLASSES)}")
            raw = CLASSES[code]
            speaker = record["SpkrID"].strip()
            if not speaker or speaker.lower() == "unknown":
                speaker = f"unknown-{stem}"
            rows.append(self.row(
                audio[stem], speaker, raw, None if code == "X" else normalise(raw),
                gender=GENDERS.get(record["Gender"].strip().lower()),
                arousal=unit(record["EmoAct"]), valence=unit(record["EmoVal"]), dominance=unit(record["EmoDom"]),
                official_split=official_split(record["Split_Set"]),
            ))
        return self.frame(rows, root)
