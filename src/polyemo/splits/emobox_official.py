"""EmoBox's published partitions (Ma et al., Interspeech 2024), loaded by key onto a manifest.

``emobox_official`` (alias ``emobox``) reads EmoBox's fold files
``<root>/<corpus>/fold_<k>/<corpus>_{train,test}_fold_<k>.jsonl`` (EmoBox's ``data/``
folder; one JSON object a line with ``key`` = ``<corpus>-<file stem>`` and ``emo``) for
every corpus of the manifest, so our scores are on exactly EmoBox's test sets. Folds are
named ``<corpus>.fold_<k>``; a manifest with several corpora is split corpus by corpus.

Matching. A fold key ``<corpus>-<stem>`` matches the manifest row whose utt_id key (the part
after ``<corpus>/``) or file stem is the same once ``_``, ``/``, ``\\`` and spaces are all read
as ``-`` (SAVEE's keys write ``JE-n23`` for the file ``JE_n23``); a key that still does not
match is tried case-insensitively. A normalised key that two rows share is ambiguous and
matches neither. Every key that cannot be matched is named, with counts:

- a manifest row (with a label) that is in neither part of a fold is an error: the
  published partition does not cover the data, so its scores would not be EmoBox's;
- a fold key absent from the manifest is an error with ``strict=True``; by default
  (``strict=False``) the manifest may be a subset (``limit``, a label set that drops a
  class such as EmoDB's boredom), which is warned about and recorded in ``params``
  (``fold_keys_not_in_manifest``); folds left without test or training rows are skipped
  and recorded (``skipped_folds``).

EmoBox's own label of each key (``emo`` through the corpus' ``label_map.json`` /
``label_dict.json``) is compared with the manifest's ``label``; disagreements are an error.

Validation. EmoBox has train and test only (and selects on test). Each fold's validation
part is carved from its training part with :func:`polyemo.splits.core.carve_validation`:
speaker groups of the training part by default (``validation_by="speaker"``), whole
content-hash groups stratified by class with ``validation_by="utterance"``; never empty.

Speaker independence is measured, not assumed: a fold is ``speaker_independent`` when no
test speaker is in its training side. RAVDESS, SAVEE and EMOVO's folds are; EmoDB's, URDU's
and ASED's are random folds whose test speakers are also training speakers. That, and any
identical recording (same ``content_hash``) on both sides, is the published partition as
published: each fold's ``info`` records ``shared_speakers`` and ``shared_recordings``, the
split's ``params`` both per fold, and the leakage check reports them as documented
properties (:func:`polyemo.splits.leakage.documented_properties`), not as errors.

Root: ``root=``, else ``$POLYEMO_EMOBOX``, else an ``emobox`` folder beside the corpora
root (``.../shared/emobox`` next to ``.../shared/corpora``: found from the manifest's audio
paths, then from ``$POLYEMO_CORPORA``).

EmoBox's balanced cross-corpus test sets (its track 2: 240 utterances each of RAVDESS and
SAVEE, 4 classes x 60) are :func:`track2_test_ids`, used by ``cross_corpus`` with
``test_set="emobox_track2"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from polyemo.labels import UnknownLabelError, normalise
from polyemo.splits import PROTOCOLS
from polyemo.splits.core import (
    DEFAULT_VALIDATION_FRACTION,
    build_split,
    labelled_rows,
    make_fold,
    rng_for,
    select_corpus,
)
from polyemo.splits.model import Split, SplitError

ROOT_ENV = "POLYEMO_EMOBOX"
CORPORA_ENV = ("POLYEMO_CORPORA", "POLYEMO_SHARED_CORPORA")
LABEL_MAP_FILES = ("label_map.json", "label_dict.json")
TRACK2_FILES = {"ravdess": "RAVDESS_selected_balenced.jsonl", "savee": "SAVEE_selected_balenced.jsonl"}
VALIDATION_BY = ("speaker", "utterance")
LISTED = 8
_SEPARATORS = re.compile(r"[_/\\\s]+")


class EmoBoxKeyWarning(UserWarning):
    """Fold keys of EmoBox's partition that the (subset) manifest does not hold."""


def _listed(values) -> str:
    values = sorted(values)
    shown = ", ".join(map(str, values[:LISTED]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > LISTED else "")


def normalise_key(key: str) -> str:
    """``JE_n23``, ``JE/n23`` and ``JE-n23`` are one key."""
    return _SEPARATORS.sub("-", str(key).strip())


# --- where the partitions are --------------------------------------------------------------

def _beside_corpora(paths) -> Path | None:
    """An ``emobox`` folder next to an ancestor of the manifest's audio files."""
    seen: set[Path] = set()
    for path in paths:
        for ancestor in Path(str(path)).parents:
            if ancestor in seen:
                break
            seen.add(ancestor)
            candidate = ancestor.parent / "emobox"
            if ancestor.parent != ancestor and candidate.is_dir() and any(candidate.glob("*/fold_*")):
                return candidate
    return None


def find_root(root: str | os.PathLike[str] | None = None, manifest: pd.DataFrame | None = None) -> Path:
    """The folder of EmoBox partitions (see the module docstring); errors say where they looked."""
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise SplitError(f"emobox_official: root={str(root)!r} is not a folder")
        return path
    if os.environ.get(ROOT_ENV):
        path = Path(os.environ[ROOT_ENV]).expanduser()
        if not path.is_dir():
            raise SplitError(f"emobox_official: ${ROOT_ENV}={str(path)!r} is not a folder")
        return path
    looked = [f"${ROOT_ENV} (unset)"]
    if manifest is not None and "path" in manifest.columns:
        # One path per corpus is enough to find the corpora root.
        firsts = manifest.dropna(subset=["path"]).groupby("corpus", sort=True)["path"].first().tolist()
        found = _beside_corpora(firsts)
        if found is not None:
            return found
        looked.append("an 'emobox' folder beside the folders of the manifest's audio files")
    for variable in CORPORA_ENV:
        if os.environ.get(variable):
            candidate = Path(os.environ[variable]).expanduser().resolve().parent / "emobox"
            if candidate.is_dir():
                return candidate
            looked.append(str(candidate))
    raise SplitError(
        "emobox_official: cannot find EmoBox's partitions (looked at " + "; ".join(looked) + "); pass "
        f"root=<folder holding <corpus>/fold_<k>/*.jsonl> or set ${ROOT_ENV} (EmoBox's data/ folder, github.com/emo-box/EmoBox)"
    )


def _corpus_folder(root: Path, corpus: str) -> Path | None:
    for folder in (root / corpus, root / corpus.lower()):
        if folder.is_dir():
            return folder
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == corpus.lower()]
    return matches[0] if matches else None


def published_corpora(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("fold_*")))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SplitError(f"{path}:{number}: not a JSON line ({exc})") from None
    return records


def _part_file(fold_dir: Path, corpus: str, part: str, k: int) -> Path:
    expected = fold_dir / f"{corpus}_{part}_fold_{k}.jsonl"
    if expected.exists():
        return expected
    found = sorted(fold_dir.glob(f"*_{part}_fold_{k}.jsonl"))
    if len(found) != 1:
        raise SplitError(f"{fold_dir}: expected one {part} file like {expected.name}, found {[p.name for p in found]}")
    return found[0]


def read_folds(folder: Path) -> list[tuple[int, dict[str, list[dict[str, Any]]], list[Path]]]:
    """``[(k, {"train": records, "test": records}, files)]`` of one corpus folder, by k."""
    corpus = folder.name
    numbered = []
    for fold_dir in folder.glob("fold_*"):
        match = re.fullmatch(r"fold_(\d+)", fold_dir.name)
        if fold_dir.is_dir() and match:
            numbered.append((int(match.group(1)), fold_dir))
    if not numbered:
        raise SplitError(f"{folder}: no fold_<k> folders")
    folds = []
    for k, fold_dir in sorted(numbered):
        files = [_part_file(fold_dir, corpus, part, k) for part in ("train", "test")]
        folds.append((k, {"train": _read_jsonl(files[0]), "test": _read_jsonl(files[1])}, files))
    return folds


def label_map(folder: Path) -> dict[str, str]:
    """EmoBox's code -> name map of one corpus (empty when the folder has none)."""
    for name in LABEL_MAP_FILES:
        if (folder / name).exists():
            return {str(k): str(v) for k, v in json.loads((folder / name).read_text(encoding="utf-8")).items()}
    return {}


def files_sha256(paths: list[Path]) -> str:
    """Fingerprint of the partition files used (their bytes, in the given order)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# --- keys -> rows --------------------------------------------------------------------------

class KeyIndex:
    """Manifest rows of one corpus by normalised key (utt_id key and file stem)."""

    def __init__(self, rows: pd.DataFrame, corpus: str) -> None:
        self.exact: dict[str, str] = {}
        self.folded: dict[str, str] = {}
        ambiguous: dict[str, set[str]] = {}
        prefix = f"{corpus}/"
        utt_ids = rows["utt_id"].astype(str).tolist()
        stems = rows["path"].map(lambda p: Path(str(p)).stem).tolist() if "path" in rows.columns else [None] * len(rows)
        for utt, stem in zip(utt_ids, stems):
            names = {utt.removeprefix(prefix)} | ({stem} if stem else set())
            for name in {normalise_key(n) for n in names}:
                for table, key in ((self.exact, name), (self.folded, name.casefold())):
                    if table.get(key, utt) != utt:
                        ambiguous.setdefault(key, set()).update({utt, table[key]})
                    table[key] = utt
        for key in ambiguous:
            self.exact.pop(key, None)
            self.folded.pop(key, None)
        self.ambiguous = ambiguous

    def find(self, name: str) -> str | None:
        """The utt_id a key names; None when it names no row or two (see ``is_ambiguous``)."""
        key = normalise_key(name)
        if key in self.exact:
            return self.exact[key]
        return self.folded.get(key.casefold())

    def is_ambiguous(self, name: str) -> bool:
        key = normalise_key(name)
        return key in self.ambiguous or key.casefold() in self.ambiguous


def _strip_corpus(key: str, corpus: str) -> str:
    key = str(key)
    for separator in ("-", "_", "/"):
        if key.lower().startswith(f"{corpus.lower()}{separator}"):
            return key[len(corpus) + 1:]
    return key


def _emobox_label(code: Any, mapping: dict[str, str]) -> str | None:
    name = mapping.get(str(code), str(code))
    try:
        return normalise(name)
    except UnknownLabelError:
        return None


def _published_folds(folder: Path, mine: pd.DataFrame, corpus: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Each published fold of one corpus mapped onto its manifest rows, and what is wrong.

    Returns ``[{k, name, ids: {train, test}, missing, published_train, published_test, files}]``
    and the problems that make the partition unusable on this manifest (rows in no part,
    ambiguous keys, labels EmoBox gives otherwise, utterances listed twice).
    """
    index = KeyIndex(mine, corpus)
    mapping = label_map(folder)
    label_of = dict(zip(mine["utt_id"].astype(str), mine["label"])) if "label" in mine.columns else {}
    all_rows = set(mine["utt_id"].astype(str))
    published, uncovered, ambiguous, disagreements, wrong = [], set(), set(), set(), []
    for k, parts, paths in read_folds(folder):
        fold_name = f"{corpus}.fold_{k}"
        ids: dict[str, list[str]] = {}
        missing: list[str] = []
        for part, records in parts.items():
            ids[part] = []
            for record in records:
                if "key" not in record:
                    raise SplitError(f"{paths[0].parent}: a {part} line has no 'key': {record}")
                name = _strip_corpus(record["key"], corpus)
                utt = index.find(name)
                if utt is None:
                    if index.is_ambiguous(name):
                        ambiguous.add(str(record["key"]))
                    else:
                        missing.append(str(record["key"]))
                    continue
                ids[part].append(utt)
                theirs = _emobox_label(record["emo"], mapping) if "emo" in record else None
                ours = label_of.get(utt)
                if theirs is not None and ours is not None and not pd.isna(ours) and str(ours) != theirs:
                    disagreements.add(f"{record['key']} (EmoBox {theirs}, manifest {ours})")
        twice = {u for part in ids.values() for u, n in Counter(part).items() if n > 1} | (set(ids["train"]) & set(ids["test"]))
        if twice:
            wrong.append(f"{fold_name}: the published fold lists utterances twice: {_listed(twice)}")
        uncovered |= all_rows - set(ids["train"]) - set(ids["test"])
        published.append({"k": k, "name": fold_name, "ids": ids, "missing": missing, "files": paths,
                          "published_train": len(parts["train"]), "published_test": len(parts["test"])})
    if uncovered:
        wrong.append(f"{len(uncovered)} {corpus} rows of the manifest are missing from EmoBox's folds in {folder} "
                     f"(each fold's train + test must hold every row): {_listed(uncovered)}")
    if ambiguous:
        wrong.append(f"{len(ambiguous)} {corpus} fold keys name two manifest rows once '_' and '-' are one: {_listed(ambiguous)}")
    if disagreements:
        wrong.append(f"{len(disagreements)} {corpus} rows are labelled otherwise by EmoBox: {_listed(disagreements)}")
    return published, wrong


# --- the protocol ----------------------------------------------------------------------------

@PROTOCOLS.register("emobox_official", "emobox")
def emobox_official(
    manifest: pd.DataFrame,
    *,
    label_column: str = "label",
    seed: int = 0,
    corpus: str | list[str] | None = None,
    root: str | None = None,
    strict: bool = False,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    validation_by: str = "speaker",
) -> Split:
    """EmoBox's published folds of every corpus of the manifest (see the module docstring)."""
    rng = rng_for(seed)
    if validation_by not in VALIDATION_BY:
        raise SplitError(f"validation_by must be one of {VALIDATION_BY}, got {validation_by!r}")
    if isinstance(corpus, (list, tuple)):
        chosen = manifest[manifest["corpus"].isin(list(corpus))]
        if chosen.empty:
            raise SplitError(f"no rows of corpora {list(corpus)}; the manifest holds {sorted(manifest['corpus'].dropna().unique())}")
        manifest_rows = chosen
    else:
        manifest_rows = select_corpus(manifest, corpus)
    rows = labelled_rows(manifest_rows, label_column)
    base = find_root(root, manifest)
    corpora = sorted(rows["corpus"].astype(str).unique())
    folders = {c: _corpus_folder(base, c) for c in corpora}
    unpublished = [c for c, folder in folders.items() if folder is None]
    if unpublished:
        raise SplitError(
            f"emobox_official: EmoBox publishes no partition for {unpublished} in {base} (it has "
            f"{published_corpora(base)}); split those with emobox_coverage or another protocol"
        )

    folds, files = [], []
    independent: dict[str, bool] = {}
    shared_speakers: dict[str, int] = {}
    shared_recordings: dict[str, int] = {}
    not_in_manifest: dict[str, int] = {}
    skipped: list[str] = []
    problems: list[str] = []
    for name in corpora:
        mine = rows[rows["corpus"] == name]
        published, wrong = _published_folds(folders[name], mine, name)
        files += [path for entry in published for path in entry["files"]]
        missing = sorted({key for entry in published for key in entry["missing"]})
        if missing:
            not_in_manifest[name] = len(missing)
        if wrong:
            problems += wrong
            continue
        by_utt = mine.set_index(mine["utt_id"].astype(str), drop=False)
        speaker_of = dict(zip(by_utt.index, by_utt["speaker"]))
        hash_of = {u: h for u, h in zip(by_utt.index, by_utt["content_hash"]) if not pd.isna(h)}
        kept = []
        for entry in published:
            fold_name, ids = entry["name"], entry["ids"]
            if not ids["train"] or not ids["test"]:
                skipped.append(fold_name)
                continue
            sharing = {speaker_of[u] for u in ids["train"]} & {speaker_of[u] for u in ids["test"]}
            test_hashes = {hash_of[u] for u in ids["test"] if u in hash_of}
            same_audio = {hash_of[u] for u in ids["train"] if hash_of.get(u) in test_hashes}
            info = {
                "corpus": name, "regime": "published", "published_partition": "emobox", "emobox_fold": entry["k"],
                "speaker_independent": not sharing,
                "shared_speakers": len(sharing), "shared_recordings": len(same_audio),
                "published_train": entry["published_train"], "published_test": entry["published_test"],
                "validation_by": validation_by,
            }
            fold = make_fold(
                fold_name, by_utt.loc[ids["train"]], by_utt.loc[ids["test"]], label_column=label_column,
                validation_fraction=validation_fraction, rng=rng, speaker_independent=validation_by == "speaker", info=info,
            )
            if not fold.validation:
                raise SplitError(f"{fold_name}: no validation rows can be carved from its {len(ids['train'])} training rows")
            kept.append(fold)
            shared_speakers[fold_name], shared_recordings[fold_name] = len(sharing), len(same_audio)
        if not kept:
            problems.append(f"{name}: no EmoBox fold keeps both training and test rows of this manifest")
        folds += kept
        independent[name] = all(f.info["speaker_independent"] for f in kept)
    if problems:
        raise SplitError("emobox_official: " + "; ".join(problems))
    if not_in_manifest:
        message = (f"emobox_official: EmoBox fold keys not in the manifest: "
                   + ", ".join(f"{c} {n}" for c, n in sorted(not_in_manifest.items())))
        if strict:
            raise SplitError(message + " (strict=True: the manifest must hold every published utterance)")
        warnings.warn(message + " (a subset manifest: scored on the rows it holds)"
                      + (f"; folds without rows skipped: {skipped}" if skipped else ""), EmoBoxKeyWarning, stacklevel=2)
    elif skipped:  # cannot happen with every key matched; a guard for odd partitions
        raise SplitError(f"emobox_official: folds without training or test rows: {skipped}")

    params = {
        "corpora": corpora, "strict": strict, "validation_fraction": validation_fraction, "validation_by": validation_by,
        "speaker_independent": independent, "shared_speakers": shared_speakers, "shared_recordings": shared_recordings,
        "fold_keys_not_in_manifest": not_in_manifest, "skipped_folds": skipped, "files_sha256": files_sha256(files),
    }
    if corpus is not None:
        params["corpus"] = corpus if isinstance(corpus, str) else list(corpus)
    return build_split(
        manifest, "emobox_official", folds, seed=seed, label_column=label_column,
        speaker_independent=all(independent.values()), params=params,
    )


# --- EmoBox track 2: balanced cross-corpus test sets -------------------------------------

def track2_test_ids(
    manifest: pd.DataFrame,
    corpus: str,
    root: str | os.PathLike[str] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """utt_ids of EmoBox's balanced test set of ``corpus`` (ravdess or savee) and how it matched.

    ``<root>/track2/<CORPUS>_selected_balenced.jsonl`` (``wav_filename`` like
    ``Actor_15/03-01-03-01-01-02-15.wav`` or ``JK/sa09.wav``, ``label``, ``speaker``): each line
    matches the manifest row of that corpus whose key is the file's stem, or its
    ``<folder>_<stem>`` (SAVEE's ``JK_sa09``). Every line must match, with EmoBox's label.
    """
    key = corpus.lower()
    if key not in TRACK2_FILES:
        raise SplitError(f"EmoBox's track 2 has balanced test sets for {sorted(TRACK2_FILES)} only, not {corpus!r}")
    base = find_root(root, manifest)
    path = base / "track2" / TRACK2_FILES[key]
    if not path.exists():
        raise SplitError(f"{path}: no such file (EmoBox's track 2 test set of {corpus})")
    rows = manifest[manifest["corpus"] == corpus]
    if rows.empty:
        raise SplitError(f"EmoBox track 2: the manifest has no {corpus} rows")
    index = KeyIndex(rows, corpus)
    label_of = dict(zip(rows["utt_id"].astype(str), rows["label"])) if "label" in rows.columns else {}
    chosen, unmatched, disagreements = [], [], []
    records = _read_jsonl(path)
    for record in records:
        name = Path(str(record["wav_filename"]))
        # RAVDESS names its files by stem (Actor_15/03-01-...); SAVEE's stems repeat per speaker (JK/sa09).
        candidates = [name.stem] + ([f"{name.parent.name}_{name.stem}", str(name.with_suffix(""))] if name.parent.name else [])
        utt = next((found for found in map(index.find, candidates) if found is not None), None)
        if utt is None:
            unmatched.append(str(record["wav_filename"]))
            continue
        theirs, ours = _emobox_label(record.get("label"), {}), label_of.get(utt)
        if theirs is not None and ours is not None and not pd.isna(ours) and str(ours) != theirs:
            disagreements.append(f"{record['wav_filename']} (EmoBox {theirs}, manifest {ours})")
        chosen.append(utt)
    if unmatched:
        raise SplitError(f"{path}: {len(unmatched)} of {len(records)} utterances are not in the manifest: {_listed(unmatched)}")
    if disagreements:
        raise SplitError(f"{path}: {len(disagreements)} utterances are labelled otherwise in the manifest: {_listed(disagreements)}")
    if len(set(chosen)) != len(chosen):
        raise SplitError(f"{path}: lists an utterance twice")
    info = {"test_set": "emobox_track2", "test_set_file": path.name, "test_set_sha256": files_sha256([path])}
    return sorted(chosen), info
