"""Zero-shot languages: the zero-shot recipe, macro-F1 per held-out language, under three
normalisations (global; enrolled-speaker; test-speaker, transductive).

    python benchmarks/zero_shot.py [--cache DIR] [--recipe recipes/zero-shot.yaml] [--precision fp32]

Leave one language out over emodb (de), ravdess + savee (en), emovo (it) and urdu (ur) on
poleval6; each fold trains on the other languages, chooses the layer and the checkpoint on
held-out speakers of those languages, and tests once on the held-out language. Results:
benchmarks/results/zero_shot.{json,md}. The machine may be shared: timings pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from polyemo.experiment import run_bench  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _ci(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="feature cache (default: the user cache)")
    parser.add_argument("--precision", default="auto", help="encoder precision: auto (bf16 only where the CPU has it natively, else fp32), fp32, bf16, int8")
    parser.add_argument("--recipe", type=Path, default=HERE.parent / "recipes" / "zero-shot.yaml")
    parser.add_argument("--out", type=Path, default=None, help="bench folder (default: a temporary one)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zero-shot-") as scratch:
        out = args.out or Path(scratch) / "bench"
        overrides = {"encoder.precision": args.precision}
        if args.cache is not None:
            overrides["encoder.cache_dir"] = str(args.cache)
        result = run_bench(args.recipe, out, overrides=overrides, progress=False)
    seconds = time.perf_counter() - started
    table: dict = {}
    for cell, run in result.results.items():
        table[cell] = {
            fold.info["target"]: {"macro_f1": fold.macro_f1, "ua": fold.ua, "n_test": fold.n_test,
                                  "selected_layer": fold.selected_layer, "classes": fold.classes}
            for fold in run.folds
        }
        table[cell]["mean"] = {"macro_f1": run.mean_of_folds["macro_f1"], "ua": run.mean_of_folds["ua"],
                               "macro_f1_ci95": run.mean_of_folds_ci.get("macro_f1")}
        table[cell]["headline"] = run.headline
        table[cell]["pooled"] = {"macro_f1": run.pooled["macro_f1"], "ua": run.pooled["ua"],
                                 "macro_f1_ci95": run.pooled_ci["macro_f1"]}
    report = {"recipe": str(args.recipe), "seconds": round(seconds, 1), "errors": result.errors, "cells": table,
              "load_average_at_end": os.getloadavg()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "zero_shot.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    languages = ["de", "en", "it", "ur"]
    lines = ["# Zero-shot languages (leave one language out, poleval6, whisper-base, layer chosen on training languages)", "",
             "Classes scored: anger, fear, happiness, neutral, sadness, surprise (6; a held-out language is scored on the "
             "classes it has). macro-F1 (%) on the held-out language; UA in brackets. `mean` is the mean over the four "
             "languages with a 95 % speaker-cluster bootstrap within folds; `pooled` is all predictions together with a "
             "95 % speaker-cluster bootstrap interval. Each row is a different deployment (what statistics exist at test "
             "time), compared on the same test folds; no row was chosen by these scores. global: training statistics; "
             "enrolled-speaker: 5 clips of each test speaker give its statistics and are not scored; test-speaker: all of "
             "each test speaker's clips give its statistics (transductive, unlabelled).", "",
             "| normalisation | " + " | ".join(languages) + " | mean [95% CI] | pooled [95% CI] |",
             "|---|" + "---:|" * (len(languages) + 2)]
    for cell, row in table.items():
        cells = [f"{100 * row[lang]['macro_f1']:.1f} ({100 * row[lang]['ua']:.1f})" if lang in row else "—" for lang in languages]
        ci = row["pooled"]["macro_f1_ci95"]
        lines.append(f"| {cell.replace('normalisation=', '')} | " + " | ".join(cells)
                     + f" | {100 * row['mean']['macro_f1']:.1f}{_ci(row['mean']['macro_f1_ci95'])} | {100 * row['pooled']['macro_f1']:.1f} "
                       f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] |")
    layers = {cell: {lang: row[lang]["selected_layer"] for lang in languages if lang in row} for cell, row in table.items()}
    unseen = sorted({f"{f.info['target']}: {', '.join(f.info['dropped_test_unseen_classes'])}"
                     for run in result.results.values() for f in run.folds if f.info.get("dropped_test_unseen_classes")})
    lines += ["", f"Layers chosen on validation (held-out speakers of the training languages): {layers}.",
              "Test classes that no training language has are not tested: " + ("; ".join(unseen) or "none") + ".",
              "", f"Time: {seconds:.0f} s with cached features.", ""]
    (RESULTS / "zero_shot.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
