"""The emobox recipe over the seven shared corpora: cold and warm wall time, and its leaderboard.

    python benchmarks/emobox_recipe.py [--cache DIR] [--skip-cold]

Cold: an empty feature cache (whisper-base on all 7,852 files, then the folds: EmoBox's
published folds of six corpora, EmoBox's fold rule for baved); warm: the
same recipe into a new folder with the features cached. Everything runs in this process,
exactly as ``polyemo bench recipes/emobox.yaml``. Content hashes of the corpora come from
polyemo's hash cache (the corpora were prepared before). The machine may be shared with
other work: timings are then pessimistic. Results: benchmarks/results/emobox_recipe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from polyemo.experiment import run_bench  # noqa: E402
from polyemo.paths import user_cache_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECIPE = HERE.parent / "recipes" / "emobox.yaml"


def timed(cache: Path, out: Path, corpora_root: Path | None) -> tuple[float, object]:
    overrides = {"encoder.cache_dir": str(cache)}
    if corpora_root is not None:
        overrides["corpora_root"] = str(corpora_root)
    started = time.perf_counter()
    result = run_bench(RECIPE, out, overrides=overrides, progress=False)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=user_cache_dir() / "bench-features",
                        help="feature cache; emptied first for the cold run")
    parser.add_argument("--corpora-root", type=Path, default=None)
    parser.add_argument("--skip-cold", action="store_true", help="only the warm run (the cache is kept)")
    args = parser.parse_args()
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="emobox-recipe-") as scratch:
        if not args.skip_cold:
            if args.cache.exists():
                shutil.rmtree(args.cache)
            seconds, result = timed(args.cache, Path(scratch) / "cold", args.corpora_root)
            report["cold_seconds"] = round(seconds, 1)
            report["cold_features_seconds"] = round(sum(r.seconds.get("features", 0) for r in result.results.values()), 1)
            print(f"cold: {seconds:.1f} s", flush=True)
        seconds, result = timed(args.cache, Path(scratch) / "warm", args.corpora_root)
        report["warm_seconds"] = round(seconds, 1)
        report["warm_features_seconds"] = round(sum(r.seconds.get("features", 0) for r in result.results.values()), 1)
        print(f"warm: {seconds:.1f} s", flush=True)
        report["errors"] = result.errors
        report["cells"] = {
            cell: {"ua_mean_of_folds": r.primary, "ua_std": r.primary_std, "ua_pooled": r.pooled["ua"],
                   "ua_pooled_ci95": r.pooled_ci["ua"], "wa_pooled": r.pooled["wa"], "n_folds": r.n_folds,
                   "n_utterances": r.n_utterances, "classes": r.classes, "seconds": r.seconds}
            for cell, r in result.results.items()
        }
        board = (result.out_dir / "leaderboard.md").read_text(encoding="utf-8")
    report["machine"]["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "emobox_recipe.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = ["# emobox recipe (whisper-base, learned layer weights + linear head, EmoBox's published folds), seven corpora", ""]
    if "cold_seconds" in report:
        lines.append(f"- cold (empty feature cache): **{report['cold_seconds']:.0f} s**, of which feature extraction "
                     f"{report['cold_features_seconds']:.0f} s")
    lines.append(f"- warm (features cached): **{report['warm_seconds']:.0f} s**")
    lines += [f"- machine: {report['machine']['cpus']} CPUs, load average {report['machine']['load_average_at_start']} at start, "
              f"{report['machine']['load_average_at_end']} at end (shared with other work: timings pessimistic)", "",
              board.replace("# emobox leaderboard", "## Leaderboard (warm run)")]
    (RESULTS / "emobox_recipe.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
