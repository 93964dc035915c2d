"""EMOVO, Italian, 6 actors (f1-f3, m1-m3), 7 emotions x 14 sentences.

File names ``EEE-SS-TT``: emotion code EEE (Italian: dis disgusto, gio gioia, neu
neutro, pau paura, rab rabbia, sor sorpresa, tri tristezza), speaker SS (gender from
its letter), sentence code TT (b1-b3, d1-d2, l1-l4, n1-n5; kept as text).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

EMOTIONS = {
    "dis": "disgusto", "gio": "gioia", "neu": "neutro", "pau": "paura",
    "rab": "rabbia", "sor": "sorpresa", "tri": "tristezza",
}
NAME = re.compile(r"^(dis|gio|neu|pau|rab|sor|tri)-([fm]\d)-([a-z]\d)$")


@RECIPES.register("emovo")
class EMOVO(Recipe):
    name = "emovo"
    language = "it"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            code, speaker, sentence = match.groups()
            raw = EMOTIONS[code]
            rows.append(self.row(path, speaker, raw, normalise(raw), gender=speaker[0], text=sentence))
        return self.frame(rows, root)
