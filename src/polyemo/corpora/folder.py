"""Your own data as one folder per emotion: ``root/<label>/**/<file>.<audio>``.

Every label folder name must be a known emotion name or synonym (``anger``, ``angry``,
``happy``, ...; see :mod:`polyemo.labels`); another name is an error naming the folder.

Speakers, in order of preference:

1. ``speaker_pattern``: a regular expression searched in each file's path relative to its
   label folder (e.g. ``r"^(\\w+?)_"`` for ``spk12_0001.wav``); its group ``speaker``, or
   else its first group, is the speaker. A file it does not match is an error.
2. Else the first subfolder below the label folder: ``root/angry/spk12/0001.wav`` is
   spoken by ``spk12``.
3. Else the speaker is unknown, and each file becomes its own pseudo-speaker
   ``unknown-<file>`` (never one shared fake speaker). Speaker-independent splits cannot
   then be guaranteed; a warning says so.

Options: ``corpus_name`` (the corpus name in the manifest, default ``folder``), ``language``
(ISO 639-1, default NA), ``speaker_pattern``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe, RecipeError
from polyemo.labels import UnknownLabelError, normalise


@RECIPES.register("folder")
class LabelFolders(Recipe):
    name = "folder"
    language = ""

    def __init__(self, corpus_name: str = "folder", language: str | None = None, speaker_pattern: str | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", corpus_name):
            raise RecipeError(f"corpus name {corpus_name!r}: use letters, digits, '_', '-' or '.'")
        self.name = corpus_name
        self.language = language
        self.speaker_pattern = re.compile(speaker_pattern) if speaker_pattern else None

    def _speaker(self, relative: Path, path: Path) -> tuple[str, bool]:
        """(speaker, known) for a file at ``relative`` below its label folder."""
        if self.speaker_pattern is not None:
            match = self.speaker_pattern.search(relative.as_posix())
            if not match:
                raise RecipeError(f"{path}: speaker_pattern {self.speaker_pattern.pattern!r} does not match {relative.as_posix()!r}")
            groups = match.groupdict()
            speaker = groups.get("speaker") or (match.group(1) if match.re.groups else match.group(0))
            return speaker, True
        if len(relative.parts) > 1:
            return relative.parts[0], True
        return f"unknown-{relative.with_suffix('').as_posix()}", False

    def scan(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        if not root.is_dir():
            raise RecipeError(f"{root}: not a folder")
        rows, unknown = [], 0
        for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                label = normalise(label_dir.name)
            except UnknownLabelError as exc:
                raise RecipeError(f"{label_dir}: folder name is not an emotion label ({exc})") from None
            for path in self.audio_files(label_dir):
                relative = path.relative_to(label_dir)
                speaker, known = self._speaker(relative, path)
                unknown += not known
                rows.append(self.row(
                    path, speaker, label_dir.name, label, language=self.language,
                    utt_key=path.relative_to(root).with_suffix("").as_posix(),
                ))
        if unknown:
            warnings.warn(
                f"{root}: {unknown} files have no speaker (no speaker_pattern, no speaker subfolder); each is its own "
                "pseudo-speaker, so speaker-independent splits cannot be guaranteed",
                stacklevel=2,
            )
        return self.frame(rows, root)
