"""ShEMO (Sharif Emotional Speech Database), Persian radio-play speech, 87 speakers.

File names ``GSSENN`` e.g. ``F01A01``: gender G (F/M), speaker number SS (numbered per
gender, so F01 and M01 are two people), emotion letter E (A anger, F fear, H happiness,
N neutral, S sadness, W surprise), utterance number NN. The download's ``female/`` and
``male/`` folders are fine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

EMOTIONS = {"A": "anger", "F": "fear", "H": "happiness", "N": "neutral", "S": "sadness", "W": "surprise"}
NAME = re.compile(r"^([FM])(\d\d)([AFHNSW])(\d+)$")


@RECIPES.register("shemo")
class ShEMO(Recipe):
    name = "shemo"
    language = "fa"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            gender, number, letter, _ = match.groups()
            raw = EMOTIONS[letter]
            rows.append(self.row(path, f"{gender}{number}", raw, normalise(raw), gender=gender.lower()))
        return self.frame(rows, root)
