"""The cross-corpus recipe on the shared corpora: train x test UA matrix (big4).

    python benchmarks/cross_corpus.py [--cache DIR]

Every ordered pair of ravdess, savee, emodb, emovo and urdu (train on one corpus, test on
a balanced test set of another) plus the in-domain result of each corpus on the diagonal.
Results: benchmarks/results/cross_corpus.{md,csv,png}. Timings are pessimistic on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

from polyemo.experiment import run_bench  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="feature cache (default: the user cache)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cross-corpus-") as scratch:
        result = run_bench(HERE.parent / "recipes" / "cross-corpus.yaml", Path(scratch) / "bench",
                           overrides={} if args.cache is None else {"encoder.cache_dir": str(args.cache)},
                           progress=False)
        seconds = time.perf_counter() - started
        RESULTS.mkdir(parents=True, exist_ok=True)
        table = pd.read_csv(result.out_dir / "cross_corpus.csv").set_index("train")
        shutil.copy(result.out_dir / "cross_corpus.png", RESULTS / "cross_corpus.png")
        table.to_csv(RESULTS / "cross_corpus.csv")
        board = (result.out_dir / "leaderboard.md").read_text(encoding="utf-8")
    shown = table.map(lambda v: f"{100 * v:.1f}")
    lines = ["# Cross-corpus UA (%), big4, whisper-base pooled, logistic regression (layer and C chosen on the "
             "training corpus' held-out speakers)", "",
             "Rows: training corpus; columns: test corpus (balanced: equal counts per speaker and class). "
             "Diagonal: in-domain (the corpus' own speaker-independent folds, emobox_coverage). Every cell, diagonal "
             "and off-diagonal alike, is UA pooled over that cell's own test predictions (95 % speaker-cluster "
             "bootstrap intervals on the heatmap, cross_corpus.png). Compared on test; nothing here chose a setting.", "",
             "| train \\ test | " + " | ".join(shown.columns) + " |", "|---|" + "---:|" * len(shown.columns)]
    lines += [f"| {train} | " + " | ".join(row) + " |" for train, row in zip(shown.index, shown.to_numpy().tolist())]
    lines += ["", board.replace("# cross-corpus leaderboard", "## Leaderboard"), "",
              f"Time: {seconds:.0f} s with cached features; load average at end {os.getloadavg()}.", ""]
    (RESULTS / "cross_corpus.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
