"""IEMOCAP (Interactive Emotional Dyadic Motion Capture), English, 5 sessions x 2 actors.

Layout as released: ``SessionN/sentences/wav/<dialog>/<utterance>.wav`` and the
evaluations ``SessionN/dialog/EmoEvaluation/<dialog>.txt`` with lines
``[start - end]<TAB>utterance<TAB>label<TAB>[V, A, D]`` (valence, activation, dominance,
evaluator means on a 1-5 scale). Transcripts come from ``SessionN/dialog/transcriptions``.

- label_raw is the three-letter consensus code (neu, hap, exc, sad, ang, fru, fea, sur,
  dis, oth, xxx); ``label`` its canonical name via :func:`polyemo.labels.normalise`
  (xxx = no agreement and oth become ``other``; fru becomes ``other`` as the canonical
  set has no frustration). Merging excitement into happiness is a label-set decision;
  ``label_raw`` keeps ``exc`` apart for experiments that exclude it.
- valence/arousal/dominance are rescaled from 1-5 to 0-1: ``(x - 1) / 4``.
- speaker: session and the gender letter of the utterance's speaker (the last part of the
  utterance name, e.g. Ses01F_impro01_M002 is spoken by Ses01M), so 10 speakers.
- session: the session number (1-5), for the usual leave-one-session-out protocol.
- ``style`` (extra column): impro or script.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from polyemo.corpora import RECIPES
from polyemo.corpora.base import Recipe, RecipeError
from polyemo.labels import normalise

EVALUATION = re.compile(
    r"^\[(\d+\.\d+) - (\d+\.\d+)\]\s+(Ses\d\d[FM]_\S+)\s+([a-z]{3})\s+\[(\d+\.?\d*), (\d+\.?\d*), (\d+\.?\d*)\]\s*$"
)
UTTERANCE = re.compile(r"^Ses(\d\d)[FM]_(impro|script)\w*_([FM])\d+\w*$")
TRANSCRIPT = re.compile(r"^(Ses\d\d[FM]_\S+) \[[^\]]*\]:\s?(.*)$")


def read_evaluations(root: Path) -> dict[str, tuple[str, float, float, float]]:
    """utterance -> (code, valence, activation, dominance) from every EmoEvaluation file."""
    labels: dict[str, tuple[str, float, float, float]] = {}
    for path in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        if path.name.startswith("."):
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = EVALUATION.match(line.strip())
            if match:
                _, _, utterance, code, valence, arousal, dominance = match.groups()
                labels[utterance] = (code, float(valence), float(arousal), float(dominance))
    return labels


def read_transcripts(root: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in sorted(root.glob("Session*/dialog/transcriptions/*.txt")):
        if path.name.startswith("."):
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = TRANSCRIPT.match(line.strip())
            if match:
                texts[match.group(1)] = match.group(2).strip()
    return texts


def unit(value: float) -> float:
    return (value - 1.0) / 4.0


@RECIPES.register("iemocap")
class IEMOCAP(Recipe):
    name = "iemocap"
    language = "en"

    def scan(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        labels = read_evaluations(root)
        if not labels:
            raise RecipeError(f"{root}: no Session*/dialog/EmoEvaluation/*.txt label files found")
        texts = read_transcripts(root)
        rows = []
        for session_dir in sorted(root.glob("Session*/sentences/wav")):
            for path in self.audio_files(session_dir):
                match = UTTERANCE.match(path.stem)
                if not match or path.stem not in labels:
                    continue
                session, style, gender = match.groups()
                code, valence, arousal, dominance = labels[path.stem]
                rows.append(self.row(
                    path, f"Ses{session}{gender}", code, normalise(code), gender=gender.lower(),
                    text=texts.get(path.stem), valence=unit(valence), arousal=unit(arousal),
                    dominance=unit(dominance), session=str(int(session)), style=style,
                ))
        return self.frame(rows, root)
