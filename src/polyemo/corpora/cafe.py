"""CaFE (Canadian French Emotional speech dataset), 12 actors, 6 sentences.

File names per the corpus Readme: ``AA-E-I-S`` (actor AA 01-12, odd = man, even =
woman; emotion letter E; intensity I 1 = faible/low, 2 = fort/high; sentence S 1-6),
and ``AA-N-S`` for neutral, which has no intensity. Emotions: C colère, D dégoût,
J joie, N neutre, P peur, S surprise, T tristesse. The download's folders
(``Colère/Faible/`` ...) are ignored; the file name is used. Sold in 48 kHz and 192 kHz
(AIFF) versions; any audio format is read.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

EMOTIONS = {
    "C": "colère", "D": "dégoût", "J": "joie", "N": "neutre",
    "P": "peur", "S": "surprise", "T": "tristesse",
}
INTENSITIES = {"1": "low", "2": "high"}
SENTENCES = {
    "1": "Un cheval fou dans mon jardin",
    "2": "Deux ânes aigris au pelage brun",
    "3": "Trois cygnes aveugles au bord du lac",
    "4": "Quatre vieilles truies éléphantesques",
    "5": "Cinq pumas fiers et passionnés",
    "6": "Six ours aimants domestiqués",
}
NAME = re.compile(r"^(\d\d)-(?:([CDJPST])-([12])|(N))-([1-6])$")


@RECIPES.register("cafe")
class CaFE(Recipe):
    name = "cafe"
    language = "fr"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            actor, letter, intensity, neutral, sentence = match.groups()
            raw = EMOTIONS[letter or neutral]
            rows.append(self.row(
                path, actor, raw, normalise(raw), gender="m" if int(actor) % 2 else "f",
                text=SENTENCES[sentence], intensity=INTENSITIES.get(intensity) if intensity else "normal",
            ))
        return self.frame(rows, root)
