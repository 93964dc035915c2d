"""ASED (Amharic Speech Emotion Dataset, Retta et al. 2023): Amharic, 65 speakers, 5 emotions.

File names ``xn-yy-aa-gg-bb`` e.g. ``a5-02-01-01-33``: emotion letter x with its folder
number n (n1 neutral, f2 fear, h3 happy, s4 sad, a5 angry; one file of the download starts
with an upper-case letter), sentence yy (01-07), repetition aa, gender code gg (01 female,
02 male), speaker bb (01-65, numbered across both genders). The download's folders
(``01Neutral/`` .. ``05Angry/``) agree with the letter; the letter is used.

Gender: five files carry the other gender code than every other file of their speaker
(speakers 09, 15, 21, 23, 25), so each row gets its speaker's majority gender.

Text: the sentence number is NOT offered as ``text`` (it stays empty). Most ASED sentences
are spoken in one emotion only, so sentence identity leaks the label; a text branch or any
feature built on it would learn the label from the sentence. The number is kept in the
``sentence`` column for leakage analysis only (e.g. checking sentence-disjoint splits).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe
from polyemo.labels import normalise

# letter -> (folder number, the download's folder word)
EMOTIONS = {"n": ("1", "neutral"), "f": ("2", "fearful"), "h": ("3", "happy"), "s": ("4", "sad"), "a": ("5", "angry")}
GENDERS = {"01": "f", "02": "m"}
NAME = re.compile(r"^([nfhsa])([1-5])-(\d\d)-(\d\d)-(0[12])-(\d\d)$", re.IGNORECASE)


@RECIPES.register("ased", "amharic")
class ASED(Recipe):
    name = "ased"
    language = "am"

    def scan(self, root: Path) -> pd.DataFrame:
        rows, genders = [], {}
        for path in self.audio_files(root):
            match = NAME.match(path.stem)
            if not match:
                continue
            letter, number, sentence, _repetition, gender_code, speaker = match.groups()
            number_expected, raw = EMOTIONS[letter.lower()]
            if number != number_expected:  # letter and folder number disagree: not an ASED name
                continue
            genders.setdefault(speaker, Counter())[GENDERS[gender_code]] += 1
            rows.append(self.row(path, speaker, raw, normalise(raw), text=None, sentence=sentence))
        # The speaker's majority gender (ties cannot occur in the corpus; "f" < "m" breaks them).
        majority = {spk: sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for spk, counts in genders.items()}
        for row in rows:
            row["gender"] = majority[row["speaker"].removeprefix(f"{self.name}/")]
        return self.frame(rows, root)
