"""BAVED (Basic Arabic Vocal Emotions Dataset): 7 Arabic words at three emotion levels.

File names ``S-G-A-W-L-N``: speaker id S, gender G (m/f), age A, word id W (0-6, the
words below), level L, running number N. The level is the corpus' only label: 0 low
(tired, down), 1 neutral (everyday speaking), 2 high (strong positive or negative
emotion). It is an arousal level, not a categorical emotion, so ``label`` stays NA and
the level goes to ``arousal_level``. The download's word folders (``0/`` .. ``6/``) are
fine; the file name wins where a folder disagrees.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe

LEVELS = {"0": "low", "1": "neutral", "2": "high"}
WORDS = {
    "0": "اعجبني",  # I like
    "1": "لم يعجبني",  # I did not like
    "2": "هذا",  # this
    "3": "الفيلم",  # the film
    "4": "رائع",  # great
    "5": "مقول",  # reasonable
    "6": "سيئ",  # bad
}
NAME = re.compile(r"^(\d+)-([mf])-(\d+)-([0-6])-([012])-(\d+)$")


@RECIPES.register("baved")
class BAVED(Recipe):
    name = "baved"
    language = "ar"

    def scan(self, root: Path) -> pd.DataFrame:
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            speaker, gender, _age, word, level, _ = match.groups()
            rows.append(self.row(
                path, speaker, LEVELS[level], None, gender=gender, text=WORDS[word],
                arousal_level=LEVELS[level],
            ))
        return self.frame(rows, root)
