"""URDU-Dataset (Latif et al. 2018): spontaneous Urdu speech from TV talk shows.

File names ``SPK_Fn_Enn`` e.g. ``SF10_F1_S01``: speaker SPK (SF = female, SM = male,
plus a number), file number within the speaker, emotion letter E (A angry, H happy,
N neutral, S sad) plus a running number. The download's ``Angry/ Happy/ Neutral/ Sad/``
folders agree with the letter; the letter is used. Speaker ids are as in the file names
(29 distinct, though the README says 38).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

EMOTIONS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
NAME = re.compile(r"^(S([FM])\d+)_F\d+_([AHNS])\d+$")


@RECIPES.register("urdu")
class Urdu(Recipe):
    name = "urdu"
    language = "ur"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            speaker, gender, letter = match.groups()
            raw = EMOTIONS[letter]
            rows.append(self.row(path, speaker, raw, normalise(raw), gender=gender.lower()))
        return self.frame(rows, root)
