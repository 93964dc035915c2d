"""EmoDB on its 7 native classes, leave one speaker out, frozen whisper-base: UA and time.

    python benchmarks/emodb_loso.py [--corpora-root ../shared/corpora] [--variants a,b] [--skip-cold]
                                    [--precision fp32|bf16]

Headline (every choice on held-out TRAINING speakers of each fold): the layer among all 7
(``best-on-validation``), C of the logistic regression, then a refit on train + validation;
three normalisations, each reported with its own name:

- ``global``: training statistics only (what a single-clip deployment can do);
- ``enrolled-speaker``: each test speaker's statistics from 5 enrolment clips, which are
  then left out of scoring (what a deployed system can do after a short enrolment);
- ``test-speaker``: each test speaker standardised with the statistics of all of their test
  clips (transductive, unlabelled: it flatters corpora whose speakers act every emotion).

Then a comparison of other variants (fixed layer 3, other heads), scored on the same test
folds and NOT used to choose anything (the table says so). Classes: anger, boredom,
disgust, fear, happiness, neutral, sadness (535 files). Intervals: 95 % speaker-cluster
bootstrap (within folds for the mean of folds). Results: benchmarks/results/emodb_loso.{json,md}.
The machine may be shared with other work: timings are then pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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
    "labels": "native",
    "protocol": "loso",
    "features": "pooled",
    "metrics": {"primary": "ua", "n_boot": 1000},
    "training": {"selection_metric": "ua"},
    "seed": 0,
}
CHOSEN = {"encoder": {"name": "whisper-base", "layers": "best-on-validation"},
          "head": {"name": "logreg", "params": {"C": C_GRID}}}

#: every choice on validation speakers: the headline rows
HEADLINE = {
    "global": {**CHOSEN, "normalisation": "global"},
    "enrolled-speaker": {**CHOSEN, "normalisation": {"name": "enrolled-speaker", "enrol": 5}},
    "test-speaker": {**CHOSEN, "normalisation": "test-speaker"},
}
#: other settings, compared on the same test folds (not used to choose anything)
VARIANTS = {
    "L3-logreg-global": {"encoder": {"name": "whisper-base", "layers": [3]}, "head": {"name": "logreg", "params": {"C": C_GRID}},
                         "normalisation": "global"},
    "L3-logreg-test-speaker": {"encoder": {"name": "whisper-base", "layers": [3]},
                               "head": {"name": "logreg", "params": {"C": C_GRID}}, "normalisation": "test-speaker"},
    "L3-logreg-test-speaker-norefit": {"encoder": {"name": "whisper-base", "layers": [3]},
                                       "head": {"name": "logreg", "params": {"C": C_GRID}},
                                       "normalisation": "test-speaker", "training": {"selection_metric": "ua", "refit": False}},
    "concat-logreg-test-speaker": {"encoder": {"name": "whisper-base", "layers": [2, 3, 4]},
                                   "head": {"name": "logreg", "layers": "concat", "params": {"C": C_GRID}},
                                   "normalisation": "test-speaker"},
    "weighted-linear-test-speaker": {"encoder": {"name": "whisper-base", "layers": "all"},
                                     "head": {"name": "linear", "layers": "weighted"}, "normalisation": "test-speaker",
                                     "training": {"epochs": 60, "lr": 0.002, "batch_size": 32, "patience": 12,
                                                  "selection_metric": "ua", "show_progress": False}},
}
#: the setting timed cold (fresh cache, whole pipeline)
COLD_VARIANT = "global"


def config(name: str, corpora_root: Path, cache: Path | None, precision: str) -> dict:
    settings = {**HEADLINE, **VARIANTS}[name]
    data = {**BASE, **settings, "name": f"emodb-loso-{name}", "corpora_root": str(corpora_root)}
    data["encoder"] = {**data["encoder"], "precision": precision, **({"cache_dir": str(cache)} if cache else {})}
    return data


def summary(result, seconds: float) -> dict:
    return {
        "headline": result.headline,
        "classes": result.scored_classes or result.classes,
        "normalisation": result.normalisation,
        "ua_mean_of_folds": result.primary, "ua_mean_ci95": result.primary_ci,
        "ua_pooled": result.pooled["ua"], "ua_pooled_ci95": result.pooled_ci["ua"],
        "wa_pooled": result.pooled["wa"], "macro_f1_pooled": result.pooled["macro_f1"],
        "macro_f1_mean_of_folds": result.mean_of_folds["macro_f1"],
        "selected_layers": [f.selected_layer for f in result.folds if f.selected_layer is not None],
        "n_test": sum(f.n_test for f in result.folds),
        "seconds": round(seconds, 2), "seconds_by_stage": result.seconds,
    }


def cpu_description() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return info
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            info["model"] = line.split(":", 1)[1].strip()
        if line.startswith("Flags:"):
            flags = set(line.split(":", 1)[1].split())
            info["bf16_flags"] = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"})
    return info


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{_pct(ci[0])}, {_pct(ci[1])}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora-root", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--variants", default=",".join([*HEADLINE, *VARIANTS]))
    parser.add_argument("--precision", default="auto", help="encoder precision: auto (bf16 only where the CPU has it natively, else fp32), fp32, bf16, int8")
    parser.add_argument("--cache", type=Path, default=None,
                        help="feature cache for the warm runs (default: the cold run's; with --skip-cold: the user cache)")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    report: dict = {"machine": {**cpu_description(), "load_average_at_start": os.getloadavg()},
                    "precision": args.precision, "variants": {}}
    print(f"CPU: {report['machine']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="emodb-loso-") as scratch:
        cold_cache = Path(scratch) / "features"
        warm_cache = args.cache or (None if args.skip_cold else cold_cache)
        if not args.skip_cold:
            started = time.perf_counter()
            result = run_experiment(config(COLD_VARIANT, args.corpora_root, cold_cache, args.precision),
                                    Path(scratch) / "cold", progress=False)
            report["cold"] = {"variant": COLD_VARIANT, **summary(result, time.perf_counter() - started)}
            print(f"cold {COLD_VARIANT}: {report['cold']['seconds']:.1f} s, {result.headline}", flush=True)
        for name in args.variants.split(","):
            started = time.perf_counter()
            result = run_experiment(config(name, args.corpora_root, warm_cache, args.precision), Path(scratch) / name,
                                    progress=False)
            report["variants"][name] = summary(result, time.perf_counter() - started)
            print(f"{name}: {result.headline} ({report['variants'][name]['seconds']:.1f} s)", flush=True)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "emodb_loso.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    def row(name: str, r: dict) -> str:
        layers = ",".join(str(x) for x in r["selected_layers"]) or "-"
        return (f"| {name} | {_pct(r['ua_mean_of_folds'])}{_ci(r['ua_mean_ci95'])} | {_pct(r['ua_pooled'])}{_ci(r['ua_pooled_ci95'])} "
                f"| {_pct(r['wa_pooled'])} | {_pct(r['macro_f1_mean_of_folds'])} | {r['n_test']} | {layers} | {r['seconds']:.1f} |")

    header = ["| normalisation | UA mean of 10 folds [95 % CI] | UA pooled [95 % CI] | WA pooled | macro-F1 mean | "
              "test rows scored | layers chosen | s |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    some = next(iter(report["variants"].values()))
    lines = [f"# EmoDB, {len(some['classes'])} native classes, leave one speaker out (10 folds), frozen whisper-base "
             f"{args.precision}", "",
             f"Classes scored: {', '.join(some['classes'])} (all 535 files). Protocol: exact leave-one-speaker-out; "
             "validation speakers carved from each fold's training speakers. Intervals: 95 % speaker-cluster bootstrap "
             "(within folds for the mean of folds; over all test predictions for pooled), 1000 resamples.", "",
             "## Every choice on validation speakers", "",
             "Layer (of 7) and C of a logistic regression chosen on the held-out training speakers of each fold, then "
             "refitted on train + validation. enrolled-speaker: 5 clips per test speaker give its statistics and are "
             "not scored (hence fewer test rows); test-speaker: all of each test speaker's clips give its statistics "
             "(transductive, unlabelled).", "", *header]
    lines += [row(name, r) for name, r in report["variants"].items() if name in HEADLINE]
    others = [(name, r) for name, r in report["variants"].items() if name not in HEADLINE]
    if others:
        lines += ["", "## Other settings, compared on the same test folds (not used to choose any setting)", "",
                  *[h.replace("normalisation", "variant") for h in header]]
        lines += [row(name, r) for name, r in others]
    if "cold" in report:
        cold = report["cold"]
        stages = cold["seconds_by_stage"]
        ratio = cold["seconds"] / stages["features"] if stages.get("features") else float("nan")
        lines += ["", f"Cold ({cold['variant']}, fresh feature cache, in-process, model load + extraction + 10 folds + "
                      f"report): **{cold['seconds']:.1f} s** (stages: {stages}): **{ratio:.2f}x** the feature "
                      "extraction alone (issue 10 target: <= 2x).", ""]
    m = report["machine"]
    lines += ["", f"Machine: {m.get('model', '?')}, {m['cpus']} CPUs, bf16-related flags {m.get('bf16_flags')}, load "
                  f"average at start {m['load_average_at_start']}, at end {m['load_average_at_end']} (timings are "
                  "pessimistic when the machine is shared).", ""]
    (RESULTS / "emodb_loso.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
