"""EmoDB, 7 classes, leave one speaker out, frozen whisper-base: UA of several heads, and time.

    python benchmarks/emodb_loso.py [--corpora-root ../shared/corpora] [--variants a,b] [--skip-cold]

1. Cold: a fresh feature cache, the whole experiment (whisper-base load, extraction of
   the 535 files, 10 LOSO folds, metrics and report) timed end to end, in this process.
2. Warm: every variant (layer, head, normalisation) on the cached features.

Validation: every fold carves held-out training speakers; layer, C and checkpoints are
chosen on them, never on the test speaker. Results: benchmarks/results/emodb_loso.{json,md}.
The machine may be shared with other work: timings are then pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from polyemo.experiment import run_experiment  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
C_GRID = [0.001, 0.01, 0.1, 1.0]

BASE = {
    "corpora": ["emodb"],
    "labels": "ekman7",
    "protocol": "loso",
    "features": "pooled",
    "metrics": {"primary": "ua", "n_boot": 1000},
    "training": {"selection_metric": "ua"},
    "seed": 0,
}

VARIANTS = {
    "L3-logreg": {"encoder": {"name": "whisper-base", "layers": [3]}, "head": {"name": "logreg", "params": {"C": C_GRID}}},
    "L3-logreg-speaker": {"encoder": {"name": "whisper-base", "layers": [3]}, "head": {"name": "logreg", "params": {"C": C_GRID}},
                          "normalisation": "speaker"},
    "bestlayer-logreg-speaker": {"encoder": {"name": "whisper-base", "layers": "all", "select": "best-on-validation"},
                                 "head": {"name": "logreg", "params": {"C": C_GRID}}, "normalisation": "speaker"},
    "L3-svm_linear-speaker": {"encoder": {"name": "whisper-base", "layers": [3]},
                              "head": {"name": "svm_linear", "params": {"C": C_GRID}}, "normalisation": "speaker"},
    "L3-svm_rbf-speaker": {"encoder": {"name": "whisper-base", "layers": [3]},
                           "head": {"name": "svm_rbf", "params": {"C": [1.0, 10.0, 100.0]}}, "normalisation": "speaker"},
    "concat-logreg-speaker": {"encoder": {"name": "whisper-base", "layers": [2, 3, 4]},
                              "head": {"name": "logreg", "layers": "concat", "params": {"C": C_GRID}}, "normalisation": "speaker"},
    "weighted-linear-speaker": {"encoder": {"name": "whisper-base", "layers": "all"},
                                "head": {"name": "linear", "layers": "weighted"}, "normalisation": "speaker",
                                "training": {"epochs": 60, "lr": 0.002, "batch_size": 32, "patience": 12,
                                             "selection_metric": "ua", "show_progress": False}},
}
#: the variant timed cold (fresh cache, whole pipeline)
COLD_VARIANT = "L3-logreg-speaker"


def config(name: str, corpora_root: Path, cache: Path | None) -> dict:
    data = {**BASE, **VARIANTS[name], "name": f"emodb-loso-{name}", "corpora_root": str(corpora_root)}
    data["encoder"] = {**data["encoder"], **({"cache_dir": str(cache)} if cache else {})}
    return data


def summary(result, seconds: float) -> dict:
    return {
        "ua_mean_of_folds": result.primary, "ua_std": result.primary_std,
        "ua_pooled": result.pooled["ua"], "ua_pooled_ci95": result.pooled_ci["ua"],
        "wa_pooled": result.pooled["wa"], "macro_f1_pooled": result.pooled["macro_f1"],
        "selected_layers": [f.selected_layer for f in result.folds if f.selected_layer is not None],
        "seconds": round(seconds, 2), "seconds_by_stage": result.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora-root", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cache", type=Path, default=None,
                        help="feature cache for the warm runs (default: the cold run's; with --skip-cold: the user cache)")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    report: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "load_average_at_start": os.getloadavg()}, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="emodb-loso-") as scratch:
        cold_cache = Path(scratch) / "features"
        warm_cache = args.cache or (None if args.skip_cold else cold_cache)
        if not args.skip_cold:
            started = time.perf_counter()
            result = run_experiment(config(COLD_VARIANT, args.corpora_root, cold_cache), Path(scratch) / "cold", progress=False)
            report["cold"] = {"variant": COLD_VARIANT, **summary(result, time.perf_counter() - started)}
            print(f"cold {COLD_VARIANT}: {report['cold']['seconds']:.1f} s, UA {100 * result.primary:.2f}%", flush=True)
        for name in args.variants.split(","):
            started = time.perf_counter()
            result = run_experiment(config(name, args.corpora_root, warm_cache), Path(scratch) / name, progress=False)
            report["variants"][name] = summary(result, time.perf_counter() - started)
            print(f"{name}: UA {100 * result.primary:.2f}% ± {100 * result.primary_std:.2f} (pooled "
                  f"{100 * result.pooled['ua']:.2f}%), {report['variants'][name]['seconds']:.1f} s", flush=True)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "emodb_loso.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = ["# EmoDB, 7 classes, LOSO (10 folds), frozen whisper-base", "",
             "UA in %; mean ± std over the 10 folds, and pooled over all predictions with a 95% speaker-bootstrap interval.",
             "Every choice (layer, C, epoch) is made on held-out training speakers.", "",
             "| variant | UA mean ± std | UA pooled [95% CI] | macro-F1 pooled | layers chosen | seconds (warm) |",
             "|---|---:|---:|---:|---|---:|"]
    for name, row in report["variants"].items():
        ci = row["ua_pooled_ci95"]
        layers = ",".join(str(x) for x in row["selected_layers"]) or "-"
        lines.append(f"| {name} | {100 * row['ua_mean_of_folds']:.2f} ± {100 * row['ua_std']:.2f} | {100 * row['ua_pooled']:.2f} "
                     f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | {100 * row['macro_f1_pooled']:.2f} | {layers} | {row['seconds']:.1f} |")
    if "cold" in report:
        cold = report["cold"]
        lines += ["", f"Cold ({cold['variant']}, fresh feature cache, in-process, model load + extraction + 10 folds + "
                      f"report): **{cold['seconds']:.1f} s** (stages: {cold['seconds_by_stage']}).", ""]
    lines += [f"Machine: {report['machine']['cpus']} CPUs, load average at start {report['machine']['load_average_at_start']}, "
              f"at end {report['machine']['load_average_at_end']} (shared with other work: timings pessimistic).", ""]
    (RESULTS / "emodb_loso.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
