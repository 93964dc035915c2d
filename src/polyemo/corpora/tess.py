"""TESS (Toronto Emotional Speech Set), English, two female speakers (OAF aged 64, YAF 26).

Each speaker says "Say the word ___" for 200 words in 7 emotions. File names
``SPK_word_emotion`` (e.g. ``OAF_back_angry``, ``YAF_bath_ps``); folders such as
``OAF_Pleasant_surprise/`` are ignored. Emotions: angry, disgust, fear, happy, neutral,
ps (pleasant surprise), sad. A few files of the release are named ``OA_``/``YA_``; they
belong to OAF/YAF.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

NAME = re.compile(r"^(OAF|YAF|OA|YA)_(.+)_(angry|disgust|fear|happy|neutral|ps|pleasant_surprised?|sad)$", re.IGNORECASE)


@RECIPES.register("tess")
class TESS(Recipe):
    name = "tess"
    language = "en"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            speaker, word, emotion = match.groups()
            speaker = speaker.upper()
            speaker = speaker if speaker.endswith("F") else speaker + "F"
            raw = "ps" if emotion.lower().startswith("pleasant") else emotion.lower()
            rows.append(self.row(
                path, speaker, raw, normalise(raw), gender="f", text=f"Say the word {word.lower()}",
                utt_key=f"{speaker}_{word.lower()}_{raw}",
            ))
        return self.frame(rows, root)
