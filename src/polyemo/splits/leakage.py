"""Leakage checks: does any fold let test information into training?

:func:`check_leakage` returns every problem it finds (an empty list means clean);
:func:`assert_no_leakage` raises :class:`LeakageError` listing them. Checks per fold:

- ``unknown_utt_id``: utt_ids that are not in the manifest;
- ``utt_id_overlap``: one utt_id in two parts (or twice in one part);
- ``speaker_overlap``: one speaker in two parts (speaker-independent splits only);
- ``content_hash_overlap``: identical audio (same ``content_hash``) in two parts;
- ``holdout_in_training``: a zero-shot target (language / corpus) in train or validation;
- ``empty_part``: empty train or test, or empty validation while train has >= 2 speakers.

A fold's ``info`` may say ``speaker_independent`` (true / false) for itself, which then
wins over the split's flag (a split of several corpora can mix both kinds of folds).

Published partitions (a fold whose ``info`` has ``published_partition``, e.g. EmoBox's
folds) are scored as published: speakers and identical recordings shared by the
published training side (train + validation) and test are a documented property of the
partition, not a leak of ours. They come back as problems with ``documented=True`` only
from ``check_leakage(..., include_documented=True)`` (see :func:`documented_properties`),
and :func:`assert_no_leakage` never raises for them. Overlaps between train and the
validation part we carve, and every other check, still count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd

from polyemo.splits.model import PARTS, Split

MAX_LISTED = 8


@dataclass(frozen=True)
class LeakageProblem:
    fold: str
    kind: str
    message: str
    items: tuple[str, ...] = field(default=())
    # A property of a published partition (scored as published), not a leak of ours.
    documented: bool = False

    def __str__(self) -> str:
        note = " (documented property of the published partition)" if self.documented else ""
        return f"fold {self.fold}: {self.kind}: {self.message}{note}"


class LeakageError(AssertionError):
    """A split leaks; ``problems`` holds every :class:`LeakageProblem` found."""

    def __init__(self, problems: list[LeakageProblem]) -> None:
        self.problems = problems
        lines = [f"{len(problems)} leakage problem(s):"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def _listed(values) -> str:
    values = sorted(values)
    shown = ", ".join(values[:MAX_LISTED])
    return shown + (f", ... ({len(values)} in all)" if len(values) > MAX_LISTED else "")


def check_leakage(manifest: pd.DataFrame, split: Split, *, include_documented: bool = False) -> list[LeakageProblem]:
    """Every leak between the parts of every fold of ``split`` (see the module docstring).

    ``include_documented`` adds the documented properties of published partitions.
    """
    problems: list[LeakageProblem] = []
    # Plain dicts: one lookup per utt_id, fast for every fold of a large manifest.
    utt_ids = manifest["utt_id"].astype(str).tolist()
    speaker_of = dict(zip(utt_ids, manifest["speaker"].astype(object).where(manifest["speaker"].notna(), None)))
    hash_of = dict(zip(utt_ids, manifest["content_hash"].astype(object).where(manifest["content_hash"].notna(), None)))
    for fold in split.folds:
        parts = fold.parts()
        independent = bool(fold.info.get("speaker_independent", split.speaker_independent))
        published = bool(fold.info.get("published_partition"))

        def add(kind: str, message: str, items, documented: bool = False) -> None:
            if documented and not include_documented:
                return
            problems.append(LeakageProblem(fold.name, kind, message, tuple(sorted(items)), documented))

        # Unknown ids first: the later checks look the others up in the manifest.
        known: dict[str, list[str]] = {}
        for name, ids in parts.items():
            unknown = [u for u in ids if u not in speaker_of]
            if unknown:
                add("unknown_utt_id", f"{len(unknown)} {name} utt_ids are not in the manifest: {_listed(unknown)}", unknown)
            known[name] = [u for u in ids if u in speaker_of]

        for name, ids in parts.items():
            repeated = [u for u, n in Counter(ids).items() if n > 1]
            if repeated:
                add("utt_id_overlap", f"utt_ids listed twice in {name}: {_listed(repeated)}", repeated)
        for a, b in combinations(PARTS, 2):
            both = set(parts[a]) & set(parts[b])
            if both:
                add("utt_id_overlap", f"{len(both)} utt_ids in both {a} and {b}: {_listed(both)}", both)

        speakers = {name: {speaker_of[u] for u in ids} - {None} for name, ids in known.items()}
        for a, b in combinations(PARTS, 2):
            across = published and b == "test"  # the published training side vs its test side
            if not independent and not across:
                continue
            both = speakers[a] & speakers[b]
            if both:
                utts = [u for u in known[a] + known[b] if speaker_of[u] in both]
                add(
                    "speaker_overlap",
                    f"speakers in both {a} and {b}: {_listed(both)} ({len(both)} speakers, {len(utts)} utterances, e.g. {_listed(utts[:3])})",
                    both, documented=across and not independent,
                )

        hashes = {name: {hash_of[u] for u in ids} - {None} for name, ids in known.items()}
        for a, b in combinations(PARTS, 2):
            both = hashes[a] & hashes[b]
            if both:
                utts_a = [u for u in known[a] if hash_of[u] in both]
                utts_b = [u for u in known[b] if hash_of[u] in both]
                add(
                    "content_hash_overlap",
                    f"{len(both)} identical recordings in both {a} and {b}: {a} {_listed(utts_a)} / {b} {_listed(utts_b)}",
                    [h[:16] for h in both], documented=published and b == "test",
                )

        for column, targets in fold.holdout.items():
            if column not in manifest.columns:
                add("holdout_in_training", f"the manifest has no column {column!r} to check the zero-shot target", [])
                continue
            value_of = dict(zip(utt_ids, manifest[column].astype(str)))
            for name in ("train", "validation"):
                bad = [u for u in known[name] if value_of[u] in targets]
                if bad:
                    add(
                        "holdout_in_training",
                        f"{len(bad)} {name} files have {column} in the zero-shot target {targets}: {_listed(bad)}",
                        bad,
                    )

        if not parts["train"]:
            add("empty_part", "the training part is empty", [])
        if not parts["test"]:
            add("empty_part", "the test part is empty", [])
        training_speakers = speakers["train"] | speakers["validation"]
        needs_validation = len(training_speakers) >= 2 if independent else len(parts["train"]) >= 2
        if not parts["validation"] and needs_validation:
            add("empty_part", f"the validation part is empty although training has {len(training_speakers)} speakers", [])
    return problems


def documented_properties(manifest: pd.DataFrame, split: Split) -> list[LeakageProblem]:
    """What a published partition shares across its training and test sides, as published."""
    return [p for p in check_leakage(manifest, split, include_documented=True) if p.documented]


def assert_no_leakage(manifest: pd.DataFrame, split: Split) -> None:
    """Raise :class:`LeakageError` naming every problem :func:`check_leakage` finds
    (documented properties of published partitions are not problems)."""
    problems = check_leakage(manifest, split)
    if problems:
        raise LeakageError(problems)
