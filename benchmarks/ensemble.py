"""Ensembles of frozen-encoder members on real folds: each member, the combinations, the rules.

    nice -n 19 python benchmarks/ensemble.py [--corpora-root ../shared/corpora] [--protocols emodb-loso,lolo]

Members (the Abhinaya recipe rebuilt with what runs here offline on cached features; no
fine-tuning, no LLM): S1 learned layer weights over all whisper-base layers + linear head,
weighted focal loss; S2 the same with the VS loss; S3 logistic regression on the layer chosen
on validation; E1 eGeMAPS functionals + logistic regression. Every member is trained without
a refit (``training.refit: false``) so its fold model never saw the fold's validation rows and
the run keeps their predictions, which every rule is fitted on (tie-break member, weights,
stacker). Ensembles: majority vote with the validation-best tie-break (Abhinaya's decision)
over all members and over every trio, probability mean, weights fitted on validation,
stacking. Protocols: EmoDB leave one speaker out (7 native classes, 10 folds; the default) and
leave one language out over five corpora (big4; ``--protocols lolo``). Intervals: 95 % speaker-cluster bootstrap; each
ensemble against its best member by a paired bootstrap on the same test rows and McNemar.
Results: benchmarks/results/ensemble.{md,csv}; run folders under --out (default a temp dir).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from polyemo.experiment.ensemble_bench import run_ensemble_bench  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
C_GRID = [0.001, 0.01, 0.1, 1.0]
TORCH = {"epochs": 60, "lr": 0.002, "batch_size": 32, "patience": 12, "selection_metric": "ua", "refit": False,
         "show_progress": False}
WHISPER = {"name": "whisper-base", "layers": "all"}

MEMBERS = [
    {"name": "S1-wfl", "set": {"encoder": WHISPER, "head": {"name": "linear", "layers": "weighted"},
                               "loss": {"name": "weighted_focal", "params": {"gamma": 2.0}}, "training": TORCH}},
    {"name": "S2-vs", "set": {"encoder": WHISPER, "head": {"name": "linear", "layers": "weighted"},
                              "loss": {"name": "vs", "params": {"gamma": 0.2, "tau": 1.0}}, "training": TORCH}},
    {"name": "S3-logreg", "set": {"encoder": {"name": "whisper-base", "layers": "all", "select": "best-on-validation"},
                                  "head": {"name": "logreg", "params": {"C": C_GRID}},
                                  "training": {"selection_metric": "ua", "refit": False}}},
    {"name": "E1-egemaps", "set": {"encoder": {"name": "egemaps"}, "head": {"name": "logreg", "params": {"C": C_GRID}},
                                   "training": {"selection_metric": "ua", "refit": False}}},
]
ENSEMBLES = [
    {"name": "vote", "rule": "vote", "params": {"tiebreak": "best-on-validation"}},
    {"name": "vote3", "rule": "vote", "params": {"tiebreak": "best-on-validation"}, "combinations": 3},
    {"name": "mean", "rule": "mean"},
    {"name": "weighted", "rule": "weighted"},
    {"name": "stacking", "rule": "stacking"},
]
PROTOCOLS = {
    "emodb-loso": {"corpora": ["emodb"], "labels": "native", "protocol": "loso"},
    "lolo": {"corpora": ["emodb", "ravdess", "savee", "emovo", "urdu"], "labels": "big4",
             "protocol": "leave_one_language_out"},
}


def recipe(protocol: str, corpora_root: Path) -> dict:
    return {
        "name": f"ensemble-{protocol}",
        "base": {**PROTOCOLS[protocol], "corpora_root": str(corpora_root), "features": "pooled",
                 "normalisation": "global", "metrics": {"primary": "ua", "n_boot": 1000}, "seed": 0},
        "parts": MEMBERS,
        "ensembles": ENSEMBLES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora-root", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--protocols", default="emodb-loso",
                        help=f"any of {', '.join(PROTOCOLS)} (lolo: ~3400 rows, far beyond 15 min on the shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="polyemo-ensemble-"))
    sections, tables = [], []
    started = time.perf_counter()
    for protocol in args.protocols.split(","):
        t0 = time.perf_counter()
        done = run_ensemble_bench(recipe(protocol, args.corpora_root), out / protocol, progress=False)
        seconds = time.perf_counter() - t0
        text = (done.out_dir / "ensembles.md").read_text(encoding="utf-8").split("\n", 2)[2]
        sections.append(f"## {protocol}: {PROTOCOLS[protocol]}\n\n{seconds:.0f} s.\n\n{text}")
        tables.append(done.table.assign(protocol=protocol))
        print(f"{protocol}: {seconds:.0f} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    import pandas as pd

    pd.concat(tables, ignore_index=True).to_csv(RESULTS / "ensemble.csv", index=False)
    header = (__doc__.split("\n\n", 2)[2].strip() + "\n\n"
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared, nice 19); "
              f"total {time.perf_counter() - started:.0f} s. Written by benchmarks/ensemble.py.\n")
    (RESULTS / "ensemble.md").write_text("# Ensembles of frozen-encoder members\n\n" + header + "\n" + "\n".join(sections),
                                         encoding="utf-8")


if __name__ == "__main__":
    main()
