"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song), speech, audio-only.

File names ``MM-VV-EE-II-SS-RR-AA``: modality MM (01 AV, 02 video, 03 audio-only), vocal
channel VV (01 speech, 02 song), emotion EE, intensity II (01 normal, 02 strong; neutral
has only normal), statement SS, repetition RR, actor AA (odd = male, even = female).
Only audio-only speech (03-01) is kept; the download's ``Actor_NN/`` folders are fine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
NAME = re.compile(r"^03-01-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@RECIPES.register("ravdess")
class RAVDESS(Recipe):
    name = "ravdess"
    language = "en"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match or match.group(1) not in EMOTIONS:
                continue
            emotion, intensity, statement, _, actor = match.groups()
            raw = EMOTIONS[emotion]
            rows.append(self.row(
                path, actor, raw, normalise(raw),
                gender="m" if int(actor) % 2 else "f",
                text=STATEMENTS.get(statement),
                intensity=INTENSITIES.get(intensity),
            ))
        return self.frame(rows, root)
