"""Which normalisation (and layers) for the default model: leave one language out, as it is used.

    python benchmarks/default_model.py [--corpora-root ../shared/corpora] [--variants a,b]

The default model is used on single clips, where per-speaker statistics are not available:
a speaker-normalised model then falls back to its training statistics (see
polyemo.predict). Speaker normalisation's in-corpus gains (EmoDB LOSO UA 95 vs 91 %,
benchmarks/results/emodb_loso.md) assume many clips of each test speaker. This compares, on
the default model's data (EmoDB, RAVDESS, SAVEE, EMOVO, URDU; ekman7; frozen whisper-base
bf16, pooled; logistic regression with C chosen on validation speakers), leaving each
language out in turn:

- global: features standardised with the training statistics (train and test alike)
- utterance: each pooled vector standardised over its own dimensions
- speaker (test speakers' own statistics): the optimistic, many-clips-per-speaker setting
- speaker, single clips: trained speaker-normalised, tested as the default model would be
  used on one clip at a time (training statistics)

and the layer choice (layer 3, chosen on validation, concatenated middle layers). Metrics:
macro-F1 and UA per held-out language, mean over languages. Results:
benchmarks/results/default_model.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from polyemo.experiment import load_experiment, run_experiment  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
C_GRID = [0.001, 0.01, 0.1, 1.0]

BASE = {
    "corpora": ["emodb", "ravdess", "savee", "emovo", "urdu"],
    "labels": "ekman7",
    "protocol": "leave_one_language_out",
    "encoder": {"name": "whisper-base", "precision": "bf16", "layers": [3]},
    "features": "pooled",
    "head": {"name": "logreg", "params": {"C": C_GRID}},
    "training": {"selection_metric": "macro_f1"},
    "metrics": {"primary": "macro_f1", "n_boot": 200},
    "seed": 0,
}

VARIANTS = {
    "L3-global": {"normalisation": "global"},
    "L3-utterance": {"normalisation": "utterance", "training": {"selection_metric": "macro_f1", "utterance_axis": "features"}},
    "L3-speaker": {"normalisation": "speaker"},
    "L3-speaker-single-clip": {"normalisation": "speaker"},  # evaluated by single_clip() below
    "best-layer-global": {"normalisation": "global", "encoder": {"name": "whisper-base", "precision": "bf16",
                                                                 "layers": "all", "select": "best-on-validation"}},
    "L234-concat-global": {"normalisation": "global", "encoder": {"name": "whisper-base", "precision": "bf16", "layers": [2, 3, 4]},
                           "head": {"name": "logreg", "layers": "concat", "params": {"C": C_GRID}}},
}
SINGLE_CLIP = {"L3-speaker-single-clip"}


def config(name: str, corpora_root: Path | None) -> dict:
    data = {**BASE, **VARIANTS[name], "name": f"default-model-{name}"}
    if corpora_root is not None:
        data["corpora_root"] = str(corpora_root)
    return data


def single_clip(data: dict) -> dict:
    """LOLO of a speaker-normalised model whose test clips get the training statistics.

    The folds, the validation speakers and C are the experiment runner's; only the test
    part is normalised as a single clip is at prediction time (no speaker given).
    """
    from polyemo.cache import features
    from polyemo.experiment.data import classes_of, experiment_manifest
    from polyemo.experiment.run import (
        FoldInputs,
        fold_class_masks,
        make_experiment_split,
    )
    from polyemo.metrics import evaluate_classification
    from polyemo.train import build_estimator

    cfg = load_experiment(data)
    manifest, _ = experiment_manifest(cfg)
    extracted = features(manifest, cfg.encoder.name, layers=cfg.encoder.layers, kind="pooled", progress=False,
                         encoder_options=cfg.encoder.encoder_options())
    ok = np.asarray(extracted.ok, dtype=bool)
    manifest = manifest[ok].reset_index(drop=True)
    inputs = FoldInputs(manifest, extracted.array[ok], list(extracted.layers))
    classes = classes_of(cfg, manifest)
    split = make_experiment_split(cfg, manifest)
    per_fold = {}
    for fold in split.folds:
        parts = split.frames(manifest, fold.name)
        fold_classes = [c for c in classes if c in set(parts["train"]["target"])]
        masks = fold_class_masks(parts["train"], fold_classes)
        train, val, test = (inputs.split_data(parts[k], fold_classes, masks) for k in ("train", "validation", "test"))
        estimator = build_estimator(cfg.head.head_config(), cfg.train_config(show_progress=False), len(fold_classes), fold_classes)
        estimator.fit(train, val)
        probabilities = estimator.predict(dataclasses.replace(test, speakers=None)).probabilities
        predicted = [fold_classes[i] for i in probabilities.argmax(1)]
        truth = parts["test"]["target"].astype(str).tolist()
        result = evaluate_classification(truth, predicted, classes, n_boot=0)
        per_fold[str(fold.info.get("target", fold.name))] = {k: float(v) for k, v in result.summary().items()}
    mean = {m: float(np.mean([f[m] for f in per_fold.values()])) for m in ("ua", "wa", "macro_f1")}
    return {"per_language": per_fold, "mean_of_folds": mean}


def summary(result) -> dict:
    return {
        "per_language": {str(f.info.get("target", f.name)): {"ua": f.ua, "wa": f.wa, "macro_f1": f.macro_f1, "n_test": f.n_test}
                         for f in result.folds},
        "mean_of_folds": result.mean_of_folds,
        "pooled": result.pooled,
        "selected_layers": {str(f.info.get("target", f.name)): f.selected_layer for f in result.folds
                            if f.selected_layer is not None},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora-root", type=Path, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "default_model.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("variants", {})
    report["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="default-model-bench-") as scratch:
        for name in args.variants.split(","):
            started = time.perf_counter()
            data = config(name, args.corpora_root)
            if name in SINGLE_CLIP:
                entry = single_clip(data)
            else:
                entry = summary(run_experiment(data, Path(scratch) / name, progress=False))
            entry["seconds"] = round(time.perf_counter() - started, 1)
            report["variants"][name] = entry
            print(name, json.dumps(entry["mean_of_folds"]), entry["seconds"], "s", flush=True)
            path.write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report)


def write_markdown(report: dict) -> None:
    variants = report["variants"]
    languages = sorted({lang for v in variants.values() for lang in v["per_language"]})
    header = "| variant | " + " | ".join(f"{lang} F1 / UA" for lang in languages) + " | mean macro-F1 | mean UA | s |"
    lines = [
        "# Default model: leave one language out (EmoDB, RAVDESS, SAVEE, EMOVO, URDU; ekman7; whisper-base bf16 pooled, logistic regression)",
        "",
        "Macro-F1 / UA in % per held-out language (de, en, it, ur), mean over languages. C (and the layer where chosen)",
        "on held-out speakers of the training languages. `speaker-single-clip`: trained speaker-normalised, tested one",
        "clip at a time as the default model is used (training statistics, no speaker statistics).",
        "",
        header,
        "|---|" + "---:|" * (len(languages) + 3),
    ]
    for name, v in variants.items():
        cells = []
        for lang in languages:
            f = v["per_language"].get(lang)
            cells.append("—" if f is None else f"{100 * f['macro_f1']:.1f} / {100 * f['ua']:.1f}")
        mean = v["mean_of_folds"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * mean['macro_f1']:.1f} | {100 * mean['ua']:.1f} | {v.get('seconds', '')} |")
    layers = {n: v["selected_layers"] for n, v in variants.items() if v.get("selected_layers")}
    if layers:
        lines += ["", "Layers chosen on validation: " + "; ".join(f"{n}: {json.dumps(s)}" for n, s in layers.items())]
    lines += ["", f"Machine: {report['machine']}", ""]
    (RESULTS / "default_model.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
