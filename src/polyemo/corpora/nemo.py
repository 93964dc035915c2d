"""nEMO, Polish acted emotional speech, 9 actors.

Layout as released: ``samples/<file_id>`` and ``data.tsv`` with the columns file_id,
emotion, raw_text, normalized_text, speaker_id, gender, age. Emotions: anger, fear,
happiness, neutral, sadness, surprised. ``raw_text`` (orthographic) becomes the text.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe, RecipeError
from polyemo.labels import UnknownLabelError, normalise

COLUMNS = ["file_id", "emotion", "raw_text", "speaker_id", "gender"]
GENDERS = {"male": "m", "female": "f", "m": "m", "f": "f"}


@RECIPES.register("nemo")
class NEMO(Recipe):
    name = "nemo"
    language = "pl"

    def scan(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        found = sorted(root.rglob("data.tsv"))
        if not found:
            raise RecipeError(f"{root}: no data.tsv found")
        table = pd.read_csv(found[0], sep="\t", dtype=str, keep_default_na=False, quoting=3)
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise RecipeError(f"{found[0]}: lacks columns {missing}")
        audio = {p.stem: p for p in self.audio_files(root)}
        rows = []
        for number, record in enumerate(table.to_dict("records"), start=2):
            stem = Path(record["file_id"].strip()).stem
            if stem not in audio:
                continue
            raw = record["emotion"].strip()
            try:
                label = normalise(raw)
            except UnknownLabelError as exc:
                raise RecipeError(f"{found[0]}: line {number} ({stem}): {exc}") from None
            rows.append(self.row(
                audio[stem], record["speaker_id"].strip(), raw, label,
                gender=GENDERS.get(record["gender"].strip().lower()), text=record["raw_text"].strip() or None,
            ))
        return self.frame(rows, root)
