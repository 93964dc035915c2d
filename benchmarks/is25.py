"""Speech only vs speech + text, and the IS25-SER ablation ladder, on the shared corpora.

    nice -n 19 python benchmarks/is25.py [--part emodb,baved] [--n-boot 1000]

Part A -- EmoDB, categorical (7 classes, leave-one-speaker-out, 10 folds): whisper-base pooled
features (mean of all layers; no layer chosen), logistic regression (C = 1, fixed), global
normalisation, with

1. speech only;
2. text only: the text branch by itself (Whisper's decoder states on the sentence, last layer);
3. speech + text, concatenated (the IS25-SER seed's fusion);
4. late fusion: the mean of 1's and 2's class probabilities (same folds, same rows).

Text here is the corpus' reference sentence (``text.source: text``): a perfect transcript,
the text branch's best case. EmoDB's ten sentences are each spoken in every emotion, so the
text carries (next to) nothing about the label: the measurement checks that fusion does not
hurt and that the text branch alone stays near chance. (ASR transcripts of all 535 clips cost
~25 min of Whisper decoding on this machine; benchmarks/asr_wer.py measures the ASR stage.)

Part B -- BAVED, ordinal arousal (low/neutral/high = 1/2/3; 5 speaker folds): the seed's
heads (per-attribute MLP, sigmoid + min-max to [1, 3], CCC loss, epoch chosen by validation
CCC), whisper-base all layers with learned layer weights, the ladder

1. speech only; 2. + text (BAVED's spoken word, concatenated); 3. + gender auxiliary head
(alpha = 1); 4. + undersampling (as many rows per arousal level as the rarest level, every epoch).

Every score has its 95 % speaker-cluster bootstrap interval; differences against speech only
are paired (same folds, same speakers resampled). Writes benchmarks/results/speech_text.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORPORA = Path(os.environ.get("POLYEMO_CORPORA", HERE.parent.parent / "shared" / "corpora"))
TEXT = {"source": "text", "encoder": "whisper-decoder", "layer": "last"}


def emodb_configs(n_boot: int) -> dict[str, dict]:
    base = {"corpora": ["emodb"], "corpora_root": str(CORPORA), "labels": "native", "protocol": "loso",
            "encoder": {"name": "whisper-base", "layers": "all"},
            "head": {"name": "logreg", "params": {"C": 1.0}, "layers": "mean"}, "normalisation": "global",
            "metrics": {"n_boot": n_boot}, "seed": 0}
    return {"speech": {**base, "name": "st-emodb-speech"},
            "text": {**base, "name": "st-emodb-text", "text": {**TEXT, "fusion": "text"}},
            "speech+text": {**base, "name": "st-emodb-concat", "text": {**TEXT, "fusion": "concat"}}}


def baved_configs(n_boot: int) -> dict[str, dict]:
    head = {"name": "dimensional", "params": {"projection_dim": 128, "hidden_dim": 64, "dropout": 0.2}}
    base = {"corpora": ["baved"], "corpora_root": str(CORPORA), "target": "dimensions",
            "dimensions": {"attributes": ["arousal"], "source": "arousal_level"},
            "protocol": {"name": "speaker_kfold", "params": {"k": 5}}, "encoder": {"name": "whisper-base"},
            "head": head, "normalisation": "global", "metrics": {"n_boot": n_boot}, "seed": 0,
            "training": {"epochs": 20, "lr": 0.002, "batch_size": 64, "patience": 5, "show_progress": False}}
    gender = {**head, "params": {**head["params"], "gender_weight": 1.0}}
    return {"speech": {**base, "name": "st-baved-speech"},
            "+ text": {**base, "name": "st-baved-text", "text": {**TEXT, "fusion": "concat"}},
            "+ gender auxiliary": {**base, "name": "st-baved-gender", "text": {**TEXT, "fusion": "concat"}, "head": gender},
            "+ undersampling": {**base, "name": "st-baved-under", "text": {**TEXT, "fusion": "concat"}, "head": gender,
                                "training": {**base["training"], "sampling": "undersample"}}}


def folds_of(predictions: pd.DataFrame, pred_column: str = "pred"):
    from polyemo.metrics import FoldPredictions

    return [FoldPredictions(y_true=rows["true"].tolist(), y_pred=rows[pred_column].tolist(), name=str(name),
                            groups=rows["speaker"].astype(str).tolist())
            for name, rows in predictions.groupby("fold", sort=True)]


def late_fusion(a: pd.DataFrame, b: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Mean of two runs' class probabilities on the same rows; the arg-max is the prediction."""
    b = b.set_index("utt_id").loc[a["utt_id"]]
    if not (b["fold"].to_numpy() == a["fold"].to_numpy()).all():
        raise ValueError("the two runs' folds differ")
    columns = [f"p_{c}" for c in classes]
    mean = (a[columns].to_numpy() + b[columns].to_numpy()) / 2
    out = a.copy()
    out[columns] = mean
    out["pred"] = [classes[i] for i in mean.argmax(1)]
    return out


def run_part(configs: dict[str, dict], out: Path) -> dict[str, dict]:
    from polyemo.experiment import run_experiment

    runs = {}
    for label, config in configs.items():
        started = time.perf_counter()
        result = run_experiment(config, out / config["name"], progress=False)
        predictions = pd.read_csv(out / config["name"] / "predictions.csv", dtype={"true": str, "pred": str})
        runs[label] = {"result": result, "predictions": predictions, "seconds": round(time.perf_counter() - started, 1)}
        print(f"{label}: {result.headline[:160]} ({runs[label]['seconds']} s)", flush=True)
    return runs


def _ci(values) -> str:
    return f"[{values[0] * 100:.1f}, {values[1] * 100:.1f}]" if values else ""


def emodb_section(runs: dict[str, dict], n_boot: int) -> tuple[list[str], dict]:
    from polyemo.metrics import aggregate_folds, paired_difference

    classes = runs["speech"]["result"].classes
    fused = late_fusion(runs["speech"]["predictions"], runs["text"]["predictions"], classes)
    late = aggregate_folds(folds_of(fused), labels=classes, task="classification", n_boot=n_boot)
    rows, record = [], {}
    reference = folds_of(runs["speech"]["predictions"])
    systems = {label: run["predictions"] for label, run in runs.items()} | {"late fusion (mean of 1 and 2)": fused}
    for label, predictions in systems.items():
        if label in runs:
            r = runs[label]["result"]
            ua, ua_ci, pooled, pooled_ci = r.primary, r.primary_ci, r.pooled["ua"], r.pooled_ci.get("ua")
        else:
            stat = late.mean_of_folds["ua"]
            ua, ua_ci = stat.mean, [stat.ci.low, stat.ci.high]
            pooled, pooled_ci = late.pooled.ua, [late.pooled.ci["ua"].low, late.pooled.ci["ua"].high]
        diff = paired_difference(folds_of(predictions), reference, classes, "ua", n_boot=n_boot)
        rows.append(f"| {label} | {ua * 100:.1f} {_ci(ua_ci)} | {pooled * 100:.1f} {_ci(pooled_ci)} | "
                    f"{diff.value * 100:+.1f} [{diff.low * 100:+.1f}, {diff.high * 100:+.1f}] |")
        record[label] = {"ua_mean_of_folds": ua, "ua_ci": ua_ci, "ua_pooled": pooled, "ua_pooled_ci": pooled_ci,
                         "ua_difference_vs_speech": [diff.value, diff.low, diff.high]}
    lines = ["## A. EmoDB, 7 classes, leave-one-speaker-out (10 folds)", "",
             "whisper-base pooled features (mean of all 7 layers), logistic regression C = 1, global normalisation. "
             "Text: the reference sentence through Whisper's decoder (last layer). UA in %, 95 % speaker-cluster "
             "bootstrap intervals; the difference is paired against speech only.", "",
             "| system | UA mean of folds | UA pooled | UA - speech only (paired) |", "|---|---|---|---|", *rows]
    return lines, record


def baved_section(runs: dict[str, dict], n_boot: int) -> tuple[list[str], dict]:
    rows, record = [], {}
    reference = runs["speech"]["predictions"].set_index("utt_id")
    for label, run in runs.items():
        r = run["result"]
        ccc, ci = r.pooled["ccc_arousal"], r.pooled_ci.get("ccc_arousal")
        folds_ccc = r.mean_of_folds.get("ccc_arousal")
        gain = paired_ccc_difference(run["predictions"], reference, n_boot)
        from polyemo.experiment.dimensions import gender_accuracy

        gender = gender_accuracy(run["predictions"])
        rows.append(f"| {label} | {ccc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {folds_ccc:.3f} | "
                    f"{r.pooled['pearson_arousal']:.3f} | {r.pooled['mae_arousal']:.3f} | "
                    f"{gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}] | {'' if gender is None else f'{gender[0] * 100:.1f}'} |")
        record[label] = {"ccc_pooled": ccc, "ccc_ci": ci, "ccc_mean_of_folds": folds_ccc,
                         "pearson": r.pooled["pearson_arousal"], "mae": r.pooled["mae_arousal"],
                         "ccc_difference_vs_speech": gain, "seconds": run["seconds"],
                         "gender_accuracy": None if gender is None else gender[0]}
    lines = ["## B. BAVED, ordinal arousal (low / neutral / high = 1 / 2 / 3), 5 speaker folds", "",
             "The IS25-SER seed's ladder on our only real dimensional data: whisper-base (all layers, learned "
             "weights), per-attribute MLP with sigmoid + min-max to [1, 3], CCC loss, epoch chosen on validation "
             "CCC, refit. Text: BAVED's spoken word (reference) through Whisper's decoder, concatenated. "
             "Pooled CCC with its 95 % speaker-cluster bootstrap interval; the difference is paired (the same "
             "speakers resampled for both systems).", "",
             "| system | CCC pooled | CCC mean of folds | Pearson r | MAE | CCC - speech only (paired) | gender acc. % |",
             "|---|---|---|---|---|---|---|", *rows]
    return lines, record


def paired_ccc_difference(predictions: pd.DataFrame, reference: pd.DataFrame, n_boot: int, seed: int = 0) -> list[float]:
    """Pooled CCC(A) - CCC(speech only) on the same rows, speakers resampled together."""
    from polyemo.metrics import concordance_cc

    ref = reference.loc[predictions["utt_id"]]
    t = predictions["true_arousal"].to_numpy(float)
    a, b = predictions["pred_arousal"].to_numpy(float), ref["pred_arousal"].to_numpy(float)
    value = concordance_cc(t, a) - concordance_cc(t, b)
    speakers = predictions["speaker"].astype(str).to_numpy()
    units = {s: np.flatnonzero(speakers == s) for s in np.unique(speakers)}
    keys = list(units)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        index = np.concatenate([units[keys[i]] for i in rng.integers(0, len(keys), len(keys))])
        draws.append(concordance_cc(t[index], a[index]) - concordance_cc(t[index], b[index]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return [float(value), float(low), float(high)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="emodb,baved")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/speech_text"))
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = ["# Speech only vs speech + text (issue 13)", ""]
    record: dict = {}
    parts = args.part.split(",")
    if "emodb" in parts:
        section, record["emodb"] = emodb_section(run_part(emodb_configs(args.n_boot), args.out), args.n_boot)
        lines += section + [""]
    if "baved" in parts:
        section, record["baved"] = baved_section(run_part(baved_configs(args.n_boot), args.out), args.n_boot)
        lines += section + [""]
    seconds = time.perf_counter() - started
    lines += [f"Wall time {seconds / 60:.1f} min on 2 shared CPU cores (nice 19; features from the shared cache)."]
    if args.note:
        lines += ["", args.note]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speech_text.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "speech_text.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
