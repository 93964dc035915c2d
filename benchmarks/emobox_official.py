"""Our scores on EmoBox's own folds beside EmoBox's published UA, per corpus, one table.

    python benchmarks/emobox_official.py [--precision auto] [--out DIR] [--results FILE]
    python benchmarks/emobox_official.py --limit 16 --encoder egemaps --epochs 1 --results /tmp/e.md  # shrunk check

Runs ``polyemo bench recipes/emobox.yaml`` (Python API, :func:`polyemo.experiment.run_bench`)
on the six shared corpora with categorical labels (emodb, ravdess, savee, emovo, urdu, ased;
baved, arousal levels without EmoBox folds, is left out): protocol ``emobox_official``
(EmoBox's published train/test files in ../shared/emobox, validation carved from each fold's
training speakers), each corpus on its own native classes, frozen whisper-base (precision
``--precision``, default auto: bf16 only where the CPU computes it natively, else fp32), pooled
features of every layer with learned layer weights and a linear layer, every choice made on
validation speakers. Writes benchmarks/results/emobox_official.md (and .json): per corpus,
our UA / WA / macro-F1 as the mean of folds with its 95 % interval and pooled, beside
EmoBox's published UA on the same folds (read from ../shared/emobox/README.md: WavLM large,
Whisper large v3, best of its models), with the classes scored, the protocol, the
normalisation and whether the folds are speaker-independent.

EmoBox's numbers come from frozen large encoders with its own downstream head and no
validation set (its choices are made on the test folds); ours come from a smaller encoder
(whisper-base) with every choice on validation speakers: the comparison is of the same test
sets, not of equal models.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import yaml  # noqa: E402

from polyemo.cli.run import experiment_overrides  # noqa: E402
from polyemo.experiment import run_bench  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RECIPE = REPO / "recipes" / "emobox.yaml"
CORPORA = ("emodb", "ravdess", "savee", "emovo", "urdu", "ased")
EMOBOX_COLUMNS = ("WavLM large", "Whisper large v3", "best of its 10 models")
#: the recipe as it is, and its learned-layer-weights head alone (select switched off)
VARIANTS = {"select": {}, "weights only": {"select": None}}


def emobox_root(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if os.environ.get("POLYEMO_EMOBOX"):
        return Path(os.environ["POLYEMO_EMOBOX"])
    return REPO.parent / "shared" / "emobox"


def published_ua(readme: Path) -> dict[str, dict[str, str]]:
    """EmoBox's intra-corpus UA table of ../shared/emobox/README.md: corpus -> column -> text."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if "published intra-corpus UA" in line)
    header = None
    table: dict[str, dict[str, str]] = {}
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            if header is not None:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(cells[0]) <= set("-: "):
            table[cells[0]] = dict(zip(header[1:], cells[1:]))
    missing = [c for c in EMOBOX_COLUMNS if header is None or c not in header]
    if missing:
        raise SystemExit(f"{readme}: the published UA table lacks the columns {missing}")
    return table


def bench_grid(recipe: Path) -> dict:
    """recipes/emobox.yaml with only the six corpora EmoBox publishes folds for."""
    grid = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    grid = copy.deepcopy(grid)
    grid["name"] = "emobox-official"
    grid["base"]["protocol"] = "emobox_official"
    grid["axes"]["corpora"] = [c for c in grid["axes"]["corpora"] if isinstance(c, str) and c in CORPORA]
    if sorted(grid["axes"]["corpora"]) != sorted(CORPORA):
        raise SystemExit(f"{recipe}: expected the corpora {CORPORA}, found {grid['axes']['corpora']}")
    return grid


def _pct(value) -> str:
    return "" if value is None or not math.isfinite(float(value)) else f"{100 * float(value):.1f}"


def _with_interval(value, interval) -> str:
    text = _pct(value)
    if text and interval and len(interval) == 2 and all(v is not None and math.isfinite(float(v)) for v in interval):
        text += f" [{_pct(interval[0])}, {_pct(interval[1])}]"
    return text


def cell_row(cell_dir: Path, result, published: dict[str, str]) -> dict:
    split = json.loads((cell_dir / "split" / "split.json").read_text(encoding="utf-8"))
    params = split["params"]
    (corpus,) = params["corpora"]
    scored = list(getattr(result, "scored_classes", None) or result.classes)
    folds_ci = getattr(result, "mean_of_folds_ci", {}) or {}
    shared = sorted(set(params["shared_speakers"].values()))
    return {
        "corpus": corpus,
        "classes": scored,
        "n_folds": result.n_folds,
        "skipped_folds": params.get("skipped_folds", []),
        "fold_keys_not_in_manifest": params.get("fold_keys_not_in_manifest", {}).get(corpus, 0),
        "speaker_independent": bool(params["speaker_independent"][corpus]),
        "shared_speakers": shared,
        "n_test": sum(f.n_test for f in result.folds),
        "mean_of_folds": {m: result.mean_of_folds.get(m) for m in ("ua", "wa", "macro_f1")},
        "mean_of_folds_ci": {m: folds_ci.get(m) for m in ("ua", "wa", "macro_f1")},
        "pooled": {m: result.pooled.get(m) for m in ("ua", "wa", "macro_f1")},
        "pooled_ci": {m: result.pooled_ci.get(m) for m in ("ua", "wa", "macro_f1")},
        "protocol": result.protocol,
        "normalisation": getattr(result, "normalisation", "") or "",
        "emobox_ua": {c: published.get(c, "") for c in EMOBOX_COLUMNS},
    }


def markdown(rows: list[dict], settings: dict) -> str:
    lines = [
        "# polyemo on EmoBox's own folds, beside EmoBox's published UA",
        "",
        f"- recipe: `recipes/emobox.yaml` restricted to the six corpora with EmoBox folds; encoder "
        f"`{settings['encoder']}`{' (' + settings['precision'] + ')' if settings['precision'] else ''}, "
        "pooled features. Two variants, compared on the same test folds: **select** (the recipe: in each fold, "
        "its validation speakers choose between learned layer weights + linear head and a logistic regression "
        "on one layer 2-5 with global or per-utterance statistics; then a refit on train + validation) and "
        "**weights only** (the learned layer weights + linear head alone, the recipe before this comparison). "
        "Both rows were seen before the recipe's default was set to select; select is the default because it "
        "leaves the head to the validation speakers, not because of these test scores",
        f"- protocol: `{rows[0]['protocol'] if rows else 'emobox_official'}` (EmoBox's published train/test "
        "files, `../shared/emobox`); normalisation: "
        + ", ".join(sorted({r['normalisation'] for r in rows if r['normalisation']}) or ["?"]),
        "- classes: each corpus' own (the `native` label set), scored as listed",
        "- ours: UA / WA / macro-F1 in %, mean of folds with its 95 % interval (bootstrap within folds) and "
        "pooled over all test predictions; EmoBox: its Table 4 UA on the same folds (frozen large encoders "
        "with its own head, chosen on the test folds: EmoBox has no validation set)",
        "- speaker-independent: whether no test speaker of a fold is a training speaker (EmoBox's EmoDB, URDU "
        "and ASED folds are random, as published; shared speakers per fold in brackets)",
        f"- run: {settings['seconds']:.0f} s{'; LIMITED to ' + str(settings['limit']) + ' utterances per corpus (a smoke test, not a result)' if settings['limit'] else ''}",
        "",
        "| corpus | variant | classes scored (n) | folds | speaker-independent | test rows | UA mean of folds [95 % CI] "
        "| UA pooled | WA mean of folds [95 % CI] | macro-F1 mean of folds [95 % CI] | EmoBox UA, WavLM large | "
        "EmoBox UA, Whisper large v3 | EmoBox UA, best |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        independent = "yes" if r["speaker_independent"] else f"no ({', '.join(map(str, r['shared_speakers']))} shared)"
        folds = str(r["n_folds"]) + (f" (skipped {len(r['skipped_folds'])})" if r["skipped_folds"] else "")
        lines.append("| " + " | ".join([
            r["corpus"], r["variant"], f"{', '.join(r['classes'])} ({len(r['classes'])})", folds, independent,
            str(r["n_test"]),
            _with_interval(r["mean_of_folds"]["ua"], r["mean_of_folds_ci"]["ua"]),
            _with_interval(r["pooled"]["ua"], r["pooled_ci"]["ua"]),
            _with_interval(r["mean_of_folds"]["wa"], r["mean_of_folds_ci"]["wa"]),
            _with_interval(r["mean_of_folds"]["macro_f1"], r["mean_of_folds_ci"]["macro_f1"]),
            *[r["emobox_ua"][c] for c in EMOBOX_COLUMNS],
        ]) + " |")
    missing = {r["corpus"]: r["fold_keys_not_in_manifest"] for r in rows if r["fold_keys_not_in_manifest"]}
    if missing:
        lines += ["", f"EmoBox fold keys not in the scored manifest (limit or label set): {missing}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "emobox-official", help="bench folder (resumable)")
    parser.add_argument("--results", type=Path, default=RESULTS / "emobox_official.md", help="markdown table (+ .json)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"], help="encoder precision (auto: bf16 only where native)")
    parser.add_argument("--encoder", default=None, help="another encoder (e.g. egemaps for a shrunk check)")
    parser.add_argument("--limit", type=int, default=None, help="smoke test: at most N utterances per corpus")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--corpora-root", type=Path, default=None)
    parser.add_argument("--emobox", type=Path, default=None, help="EmoBox partitions (default $POLYEMO_EMOBOX or ../shared/emobox)")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="KEY=VALUE override (repeatable)")
    args = parser.parse_args()

    root = emobox_root(args.emobox)
    published = published_ua(root / "README.md")
    overrides = experiment_overrides(args.limit, args.epochs, args.encoder, args.corpora_root, args.settings)
    neural = not (args.encoder or "whisper").startswith("egemaps")
    if neural:
        overrides.setdefault("encoder.precision", args.precision)
    overrides.setdefault("protocol.params.root", str(root))
    if args.limit is None:
        overrides.setdefault("protocol.params.strict", True)  # a full run must hold every published key
    started = time.perf_counter()
    rows = []
    for variant, extra in VARIANTS.items():
        result = run_bench(bench_grid(RECIPE), args.out / variant.replace(" ", "-"), overrides={**overrides, **extra},
                           progress=False)
        if result.errors:
            raise SystemExit(f"{variant}: cells failed: {result.errors}")
        for cell_id, run in sorted(result.results.items()):
            corpus = cell_id.split("__")[-1]
            row = cell_row(result.out_dir / "cells" / cell_id, run, published.get(corpus, {}))
            rows.append({**row, "variant": variant})
    seconds = time.perf_counter() - started
    rows.sort(key=lambda r: (CORPORA.index(r["corpus"]), list(VARIANTS).index(r["variant"])))
    settings = {"encoder": args.encoder or "whisper-base", "precision": args.precision if neural else "",
                "limit": args.limit, "seconds": seconds}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, settings)
    args.results.write_text(text, encoding="utf-8")
    args.results.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n",
                                                 encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
