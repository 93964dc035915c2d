"""The recipe interface and the helpers most recipes share."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from polyemo import manifest as mf

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aiff", ".aif")


class RecipeError(ValueError):
    pass


class Recipe(ABC):
    """Builds manifest rows for one corpus from its files and label files.

    ``scan`` returns the rows without ``content_hash`` (and, where the corpus does not say,
    without ``duration``); :func:`prepare` fills both from the audio.
    """

    name: str = ""
    language: str = ""

    @abstractmethod
    def scan(self, root: Path) -> pd.DataFrame:
        """Rows for every utterance below ``root`` (absolute paths)."""

    # Helpers ---------------------------------------------------------------------------
    @staticmethod
    def audio_files(root: Path) -> Iterator[Path]:
        """Audio files below ``root`` in sorted order, whatever the extension."""
        root = Path(root)
        if not root.is_dir():
            raise RecipeError(f"{root}: not a folder")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for filename in sorted(filenames):
                if filename.lower().endswith(AUDIO_EXTENSIONS) and not filename.startswith("."):
                    yield Path(dirpath) / filename

    def row(self, path: Path, speaker: str, label_raw: str | None, label: str | None, **extra) -> dict:
        """A manifest row with the corpus-prefixed speaker and utt_id."""
        stem = Path(path).stem
        row = {
            "utt_id": f"{self.name}/{extra.pop('utt_key', stem)}",
            "path": str(Path(path).resolve()),
            "corpus": self.name,
            "language": extra.pop("language", self.language),
            "speaker": f"{self.name}/{speaker}",
            "gender": extra.pop("gender", None),
            "label_raw": label_raw,
            "label": label,
            "duration": extra.pop("duration", None),
            "text": extra.pop("text", None),
            "content_hash": None,
        }
        row.update(extra)
        return row

    def frame(self, rows: list[dict], root: Path) -> pd.DataFrame:
        if not rows:
            raise RecipeError(f"{root}: no {self.name} audio files found")
        return mf.normalise_frame(pd.DataFrame(rows))


def scan(corpus: str, root: str | os.PathLike[str], **options) -> pd.DataFrame:
    """Manifest rows of ``corpus`` below ``root``, without content hashes."""
    from polyemo.corpora import get_recipe

    return get_recipe(corpus, **options).scan(Path(root))


def prepare(
    corpus: str,
    root: str | os.PathLike[str],
    *,
    workers: int = 1,
    show_progress: bool = True,
    **options,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the full manifest of a corpus: recipe rows + content hashes + durations.

    Returns (manifest, failures); files that cannot be decoded are listed in failures.
    """
    rows = scan(corpus, root, **options)
    manifest, failures = mf.add_content_hashes(rows, workers=workers, show_progress=show_progress)
    return mf.validate(manifest, f"{corpus} manifest"), failures
