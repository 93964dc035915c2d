"""CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset), English, 91 actors.

File names ``AAAA_SSS_EEE_LL``: actor AAAA (1001-1091), sentence code SSS (12 sentences),
emotion EEE (ANG, DIS, FEA, HAP, NEU, SAD), level LL (LO, MD, HI, XX unspecified).
Gender comes from ``VideoDemographics.csv`` (columns ActorID, Sex) anywhere below the
root; without it gender is NA. The download ships ``AudioWAV/`` and ``AudioMP3/``:
where a recording exists in several formats the WAV (lossless) copy is used.
The labels are the actors' intended emotions (the crowd ratings are not used).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe, RecipeError
from polyemo.labels import normalise

SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)$")
# Lower rank wins when one recording is present in several formats.
FORMAT_RANK = {".wav": 0, ".flac": 1}


def read_demographics(root: Path) -> dict[str, str]:
    """ActorID -> 'm'/'f' from VideoDemographics.csv, or {} when the file is absent."""
    found = sorted(root.rglob("VideoDemographics.csv"))
    if not found:
        return {}
    table = pd.read_csv(found[0], dtype=str)
    missing = {"ActorID", "Sex"} - set(table.columns)
    if missing:
        raise RecipeError(f"{found[0]}: lacks columns {sorted(missing)}")
    sexes = {"male": "m", "female": "f"}
    return {a.strip(): sexes.get(str(s).strip().lower()) for a, s in zip(table["ActorID"], table["Sex"])}


@RECIPES.register("cremad", "crema-d", "crema_d")
class CremaD(Recipe):
    name = "cremad"
    language = "en"

    def scan(self, root: Path) -> pd.DataFrame:
        genders = read_demographics(Path(root))
        chosen: dict[str, Path] = {}
        for path in self.audio_files(root):
            if not NAME.match(path.stem):
                continue
            previous = chosen.get(path.stem)
            if previous is None or FORMAT_RANK.get(path.suffix.lower(), 9) < FORMAT_RANK.get(previous.suffix.lower(), 9):
                chosen[path.stem] = path
        rows = []
        for stem, path in sorted(chosen.items()):
            actor, sentence, emotion, level = NAME.match(stem).groups()
            rows.append(self.row(
                path, actor, emotion, normalise(emotion), gender=genders.get(actor),
                text=SENTENCES.get(sentence), intensity=LEVELS[level],
            ))
        return self.frame(rows, root)
