"""SAVEE (Surrey Audio-Visual Expressed Emotion), British English, 4 male speakers.

File names ``SS_Enn`` (or ``SS/Enn`` in the download's per-speaker folders): speaker
SS (DC, JE, JK, KL), emotion code E (a anger, d disgust, f fear, h happiness, n neutral,
sa sadness, su surprise), sentence number nn. The sentence code ``Enn`` is kept as text
(the transcripts are not distributed with the audio).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

EMOTIONS = {
    "a": "anger", "d": "disgust", "f": "fear", "h": "happiness",
    "n": "neutral", "sa": "sadness", "su": "surprise",
}
SPEAKERS = ("DC", "JE", "JK", "KL")
NAME = re.compile(r"^(?:(DC|JE|JK|KL)_)?(sa|su|[adfhn])(\d\d)$")


@RECIPES.register("savee")
class SAVEE(Recipe):
    name = "savee"
    language = "en"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            speaker, code, number = match.groups()
            if speaker is None:  # AudioData/DC/a01.wav layout of the original download
                speaker = path.parent.name
                if speaker not in SPEAKERS:
                    continue
            raw = EMOTIONS[code]
            rows.append(self.row(
                path, speaker, raw, normalise(raw), gender="m", text=f"{code}{number}",
                utt_key=f"{speaker}_{code}{number}",
            ))
        return self.frame(rows, root)
