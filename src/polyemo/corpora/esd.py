"""ESD (Emotional Speech Dataset, Zhou et al. 2021): 10 Mandarin + 10 English speakers.

Layout as released: ``<speaker>/<Emotion>/[train|evaluation|test/]<speaker>_<n>.wav`` and
``<speaker>/<speaker>.txt`` with lines ``<utterance>\\t<text>\\t<emotion>``. Speakers
0001-0010 speak Mandarin (zh), 0011-0020 English (en); genders from the corpus README.
The label file's emotion is the raw label (Chinese for the Mandarin speakers: 中立 生气
快乐 伤心 惊喜); the emotion folder is used where a file has no label-file line.
The train/evaluation/test folders, where present, give official_split (evaluation ->
validation).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe, RecipeError
from polyemo.labels import UnknownLabelError, normalise

GENDERS = {
    "0001": "f", "0002": "f", "0003": "f", "0004": "m", "0005": "m",
    "0006": "m", "0007": "f", "0008": "m", "0009": "f", "0010": "m",
    "0011": "m", "0012": "m", "0013": "m", "0014": "m", "0015": "f",
    "0016": "f", "0017": "f", "0018": "f", "0019": "f", "0020": "m",
}
CHINESE = {"中立": "neutral", "生气": "angry", "快乐": "happy", "伤心": "sad", "惊喜": "surprise"}
SPLITS = {"train": "train", "evaluation": "validation", "test": "test"}
NAME = re.compile(r"^(00[0-2]\d)_(\d{6})$")


def read_labels(root: Path) -> dict[str, tuple[str, str]]:
    """utterance -> (text, emotion) from every ``<speaker>.txt`` label file."""
    labels: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("00[0-2][0-9].txt")):
        # The Mandarin files of some copies are UTF-16 or GB18030; try the common ones.
        for encoding in ("utf-8-sig", "utf-16", "gb18030"):
            try:
                text = path.read_text(encoding=encoding)
                break
            except UnicodeError:
                continue
        else:
            raise RecipeError(f"{path}: cannot decode the label file (tried UTF-8, UTF-16, GB18030)")
        for line in text.splitlines():
            parts = [p.strip() for p in line.split("\t")]
            if len(parts) >= 3 and NAME.match(parts[0]):
                labels[parts[0]] = (parts[1], parts[-1])
    return labels


@RECIPES.register("esd")
class ESD(Recipe):
    name = "esd"
    language = ""

    def scan(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        labels = read_labels(root)
        rows = []
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            speaker = match.group(1)
            if speaker not in GENDERS:
                continue
            text, raw = labels.get(path.stem, (None, None))
            split_dir = path.parent.name.lower()
            emotion_dir = path.parent.parent.name if split_dir in SPLITS else path.parent.name
            raw = raw or emotion_dir
            try:
                label = normalise(CHINESE.get(raw, raw))
            except UnknownLabelError as exc:
                raise RecipeError(f"{path}: {exc}") from None
            rows.append(self.row(
                path, speaker, raw, label, gender=GENDERS[speaker], text=text or None,
                language="zh" if int(speaker) <= 10 else "en", official_split=SPLITS.get(split_dir),
            ))
        return self.frame(rows, root)
