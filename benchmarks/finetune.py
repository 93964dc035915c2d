"""Fine-tuned vs frozen whisper-base, zero-shot: leave one language out on poleval6.

    python benchmarks/finetune.py [--part frozen-frontend] [--per-corpus 80] [--epochs 2]
        [--freeze-blocks 4] [--out runs/finetune-bench] [--n-boot 1000] [--full]
    python benchmarks/finetune.py --part cpu-top-block --as-recipe [--per-corpus 0] [--control-layer 3]
    python benchmarks/finetune.py --rescore --out RUN   # score RUN's folders again

Runs two cells of ``recipes/poleval-finetune.yaml`` on the SAME rows and folds: the frozen
probe (cached features, layer chosen on validation speakers of the training languages) and
one fine-tuning part. On the 2-core CPU the full recipe does not fit, so by default the
fine-tuning part is shrunk as stated in the results (``--per-corpus`` clips per corpus,
``--epochs``, the front-end and the first ``--freeze-blocks`` blocks frozen, so their
outputs are computed once per clip); ``--full`` runs the part as the recipe says (GPU).
``--as-recipe`` runs the part's own settings (``cpu-top-block``: the CPU-sized variant) on at
most ``--per-corpus`` clips per corpus (0: every row; the cap spreads over speakers and
classes, seeded), changing nothing else but the torch threads (and ``--epochs`` if given).
Every number is the held-out language's macro-F1 with a 95 % speaker-cluster bootstrap
interval; the difference fine-tuned minus probe is a paired bootstrap over the same
speakers. Results: benchmarks/results/finetune.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from polyemo.experiment.grid import BenchConfig, expand_grid  # noqa: E402
from polyemo.experiment.loading import read_yaml  # noqa: E402
from polyemo.experiment.run import run_experiment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LANGUAGES = ("de", "en", "it", "ur")  # the mean is over these four (the issue's); others are shown too


def macro_f1(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> float:
    scores = []
    for c in classes:
        tp = np.sum((true == c) & (pred == c))
        fp = np.sum((true != c) & (pred == c))
        fn = np.sum((true == c) & (pred != c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def bootstrap(frames: dict[str, pd.DataFrame], n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Macro-F1 of each system on the same rows, with speaker-cluster bootstrap intervals
    and the paired difference of the first two (classes: those present in the truth)."""
    names = list(frames)
    base = frames[names[0]]
    classes = sorted(base["true"].unique())
    speakers = base["speaker"].to_numpy()
    groups = {s: np.flatnonzero(speakers == s) for s in np.unique(speakers)}
    keys = list(groups)
    point = {n: macro_f1(f["true"].to_numpy(), f["pred"].to_numpy(), classes) for n, f in frames.items()}
    rng = np.random.default_rng(seed)
    draws = {n: [] for n in names}
    for _ in range(n_boot):
        picked = np.concatenate([groups[keys[i]] for i in rng.integers(0, len(keys), len(keys))])
        for n, f in frames.items():
            draws[n].append(macro_f1(f["true"].to_numpy()[picked], f["pred"].to_numpy()[picked], classes))
    out = {n: {"macro_f1": point[n], "ci": [float(np.percentile(draws[n], 2.5)), float(np.percentile(draws[n], 97.5))]}
           for n in names}
    if len(names) == 2:
        diff = np.array(draws[names[1]]) - np.array(draws[names[0]])
        out["difference"] = {"value": point[names[1]] - point[names[0]],
                             "ci": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]}
        out["_draws"] = diff  # for the interval of the mean difference (not written)
    out["n"], out["speakers"], out["classes"] = len(base), len(keys), classes
    return out


def fold_summary(fold: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """A fold's sizes, optimiser steps, chosen epoch, validation curve and seconds."""
    history = fold.get("history") or []
    per_step = training["batch_size"] * training.get("grad_accum", 1)
    steps = -(-fold["n_train"] // training["batch_size"])
    steps = -(-steps // training.get("grad_accum", 1))
    return {"name": fold["name"], "n_train": fold["n_train"], "n_validation": fold["n_validation"],
            "n_test": fold["n_test"], "best_epoch": fold.get("best_epoch"), "clips_per_step": per_step,
            "steps": steps * len(history), "val_macro_f1": [h.get("val_macro_f1") for h in history],
            "epoch_seconds": [h.get("seconds") for h in history], "seconds": fold.get("seconds")}


def cpu_facts() -> dict[str, Any]:
    from polyemo.encoders.precision import cpu_bf16_report, cpu_flags, cpu_model

    flags = cpu_flags()
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma") if f in flags]
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": wanted, "bf16": cpu_bf16_report(),
            "torch_threads": __import__("torch").get_num_threads(), "python": platform.python_version(),
            "load_average": os.getloadavg()}


def score(runs: dict[str, Path], part: str, n_boot: int):
    """Per-language macro-F1 of the probe and the fine-tuned part on the same test rows, their
    means over LANGUAGES, and the mean paired difference with a 95 % interval (the mean over
    languages of each draw's per-language difference; speakers resampled within languages)."""
    return score_frames(read_predictions(runs), part, n_boot)


def read_predictions(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    return {n: pd.read_csv(path / "predictions.csv", dtype={"true": str, "pred": str}) for n, path in runs.items()}


def score_frames(frames: dict[str, pd.DataFrame], part: str, n_boot: int):
    probe, tuned = frames["frozen-probe"], frames[part]
    assert sorted(probe["utt_id"]) == sorted(tuned["utt_id"]), "the two cells must score the same test rows"
    tuned = tuned.set_index("utt_id").loc[probe["utt_id"]].reset_index()
    per_language = {}
    for language in [*LANGUAGES, *sorted(set(probe["language"]) - set(LANGUAGES))]:
        rows = (probe["language"] == language).to_numpy()
        if rows.any():
            per_language[language] = bootstrap({"frozen-probe": probe[rows].reset_index(drop=True),
                                                part: tuned[rows].reset_index(drop=True)}, n_boot)
    # the mean is over the four languages; a run holding out none of them (--languages am) means over its own
    averaged = [k for k in per_language if k in LANGUAGES] or list(per_language)
    means = {n: float(np.mean([per_language[k][n]["macro_f1"] for k in averaged])) for n in ("frozen-probe", part)}
    draws = np.mean([per_language[k]["_draws"] for k in averaged], axis=0)
    for v in per_language.values():
        v.pop("_draws", None)
    mean_difference = {"value": means[part] - means["frozen-probe"],
                       "ci": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]}
    return per_language, means, mean_difference


def uniform_prior_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's predictions after ``uniform-prior`` at strength 1 (the adapter's definition, fixed a
    priori: nothing is chosen), each fold's test rows (one held-out language) one unlabelled batch."""
    from polyemo.train.adaptation.uniform_prior import UniformPrior

    columns = [c for c in frame.columns if c.startswith("p_")]
    classes = np.array([c[2:] for c in columns])
    out = frame.copy()
    for _, rows in frame.groupby("fold"):
        adapted = UniformPrior(strength=1.0).adapt(None, None, rows[columns].to_numpy(np.float64))
        out.loc[rows.index, "pred"] = classes[adapted.argmax(1)]
    return out


def adapted_record(frames: dict[str, pd.DataFrame], part: str, n_boot: int) -> dict[str, Any]:
    """Probe and fine-tuned part (their predictions), both with ``uniform-prior`` on each held-out batch."""
    per_language, means, mean_difference = score_frames({n: uniform_prior_frame(f) for n, f in frames.items()},
                                                        part, n_boot)
    return {"per_language": per_language, "mean": means, "mean_difference": mean_difference}


def control_record(out: Path, part: str, layer: int, n_boot: int, seconds: float | None) -> dict[str, Any]:
    """The probe with its layer fixed to ``layer`` (no choice on validation) against the part."""
    per_language, means, mean_difference = score(
        {"frozen-probe": out / f"frozen-probe-layer{layer}", part: out / part}, part, n_boot)
    return {"layer": layer, "per_language": per_language, "mean": means, "mean_difference": mean_difference,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "poleval-finetune.yaml")
    parser.add_argument("--part", default="frozen-frontend")
    parser.add_argument("--per-corpus", type=int, default=80, help="clips per corpus at most (0: all rows)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 2 when shrunk, the recipe's with --as-recipe")
    parser.add_argument("--as-recipe", action="store_true",
                        help="the part's own settings (only the row cap, threads and --epochs change)")
    parser.add_argument("--freeze-blocks", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="the part as the recipe says (all rows, its epochs)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "finetune-bench")
    parser.add_argument("--corpora-root", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--report-only", action="store_true", help="re-render finetune.md from finetune.json")
    parser.add_argument("--control-layer", type=int, default=None,
                        help="also run the probe on this one hidden state (no layer choice), a control")
    parser.add_argument("--rescore", action="store_true",
                        help="score the run folders under --out again (finetune.json keeps its timings)")
    parser.add_argument("--languages", nargs="*", default=None,
                        help="held-out languages (folds) to run; default: every language of the corpora")
    parser.add_argument("--stem", default="finetune",
                        help="results file stem: benchmarks/results/STEM.md and STEM.json")
    args = parser.parse_args()
    results_md, results_json = RESULTS / f"{args.stem}.md", RESULTS / f"{args.stem}.json"
    if args.rescore:
        record = json.loads(results_json.read_text())
        frames = read_predictions({n: args.out / n for n in ("frozen-probe", record["part"])})
        record["per_language"], record["mean"], record["mean_difference"] = score_frames(frames, record["part"],
                                                                                       args.n_boot)
        layer = args.control_layer if args.control_layer is not None else (record.get("control") or {}).get("layer")
        if layer is not None:
            seconds = (record.get("control") or {}).get("seconds")
            record["control"] = control_record(args.out, record["part"], layer, args.n_boot, seconds)
        record["uniform_prior"] = adapted_record(frames, record["part"], args.n_boot)
        results_json.write_text(json.dumps(record, indent=2, default=str) + "\n")
        results_md.write_text(markdown(record) + "\n")
        return
    if args.report_only:
        record = json.loads(results_json.read_text())
        results_md.write_text(markdown(record) + "\n")
        return

    bench = BenchConfig(**read_yaml(args.recipe))
    common: dict[str, Any] = {"corpora_root": str(args.corpora_root.resolve())}
    capped = not args.full and args.per_corpus > 0
    if capped:
        common["limit"] = {"per_corpus": args.per_corpus}
    cells = {c.id: c for c in expand_grid(bench, str(args.recipe), args.recipe.parent, common)}
    shrink: dict[str, Any] = {}
    fold_overrides: dict[str, Any] = {"protocol.params.target": list(args.languages)} if args.languages else {}
    if args.as_recipe:
        shrink = {"training.num_threads": args.threads}
        if args.epochs is not None:
            shrink["training.epochs"] = args.epochs
    elif not args.full:
        shrink = {"training.epochs": args.epochs or 2, "training.lr": args.lr, "training.grad_accum": 2,
                  "training.num_threads": args.threads, "head.params.freeze_frontend": True,
                  "head.params.freeze_blocks": args.freeze_blocks}
    started = {}
    results = {}
    clock = time.perf_counter()
    for name, overrides in (("frozen-probe", fold_overrides), (args.part, {**shrink, **fold_overrides})):
        t = time.perf_counter()
        result = run_experiment(cells[name].config, args.out / name, overrides=overrides, progress=False)
        started[name] = round(time.perf_counter() - t, 1)
        results[name] = result
        print(f"{name}: {started[name]} s", flush=True)
    started["total"] = round(time.perf_counter() - clock, 1)
    control = None
    if args.control_layer is not None:
        t = time.perf_counter()
        run_experiment(cells["frozen-probe"].config, args.out / f"frozen-probe-layer{args.control_layer}",
                       overrides={"encoder.layers": [args.control_layer], "encoder.select": "none", **fold_overrides},
                       progress=False)
        control = control_record(args.out, args.part, args.control_layer, args.n_boot,
                                 round(time.perf_counter() - t, 1))
    frames = read_predictions({n: Path(r.out_dir) for n, r in results.items()})
    per_language, means, mean_difference = score_frames(frames, args.part, args.n_boot)
    fold_dir = Path(results[args.part].out_dir) / "folds"
    folds = [json.loads((fold_dir / name / "fold.json").read_text()) for name in sorted(p.name for p in fold_dir.iterdir())]
    config = json.loads((Path(results[args.part].out_dir) / "config.json").read_text())["config"]
    import torch

    record = {"per_language": per_language, "mean": means, "mean_difference": mean_difference, "seconds": started, "machine": cpu_facts(),
              "device": "cuda" if torch.cuda.is_available() else "cpu", "full": args.full, "as_recipe": args.as_recipe,
              "part": args.part, "per_corpus": args.per_corpus if capped else None, "rows": len(frames["frozen-probe"]),
              "languages": args.languages, "nice": os.nice(0),
              "finetune_config": {"head": config["head"], "training": config["training"], "limit": config["limit"]},
              "example_fold": {k: folds[0].get(k) for k in ("name", "n_train", "n_validation", "n_test", "best_epoch",
                                                            "history")},
              "folds": [fold_summary(f, config["training"]) for f in folds], "control": control,
              "uniform_prior": adapted_record(frames, args.part, args.n_boot)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_json.write_text(json.dumps(record, indent=2, default=str) + "\n")
    results_md.write_text(markdown(record) + "\n")
    print(markdown(record))


def describe(r: dict[str, Any]) -> str:
    """One sentence of what the fine-tuning part was."""
    head, training = r["finetune_config"]["head"]["params"], r["finetune_config"]["training"]
    layer = head["layer"]
    frozen = head.get("freeze_blocks", 0)
    if isinstance(layer, int) and layer >= 0:
        used = f"hidden state {layer} read, so blocks {layer}-5 never run; blocks {frozen}-{layer - 1} trained"
    else:
        used = f"hidden state {layer} read; blocks {frozen}-5 trained"
    return (f"method {head['method']}, front-end frozen: {head['freeze_frontend']}, first {frozen} of 6 blocks frozen "
            f"(their outputs computed once per clip), {used}; head dropout {head['dropout']} + linear"
            f"{' on the pooled state standardised with the pretrained encoder' + chr(39) + 's training-clip statistics' if head.get('standardise') else ''}, "
            f"crops train {head['crop']['train']} / eval {head['crop']['eval']} {head['crop']['seconds']} s, "
            f"{training['epochs']} epochs, lr {training['lr']} (head {head['head_lr']}), batch {training['batch_size']} x "
            f"{training.get('grad_accum', 1)} accumulated, warm-up {training['warmup_ratio']}, AdamW weight decay "
            f"{training.get('weight_decay')}, checkpoint = best validation macro-F1 "
            "(validation speakers of the training languages), no refit")


def mean_label(r: dict[str, Any]) -> str:
    """The languages the run's means are over (as :func:`score_frames` averages)."""
    return ", ".join([k for k in r["per_language"] if k in LANGUAGES] or list(r["per_language"]))


def markdown(r: dict[str, Any]) -> str:
    part = r["part"]
    training = r["finetune_config"]["training"]
    how = ("the full recipe part" if r["full"] else "the recipe part's own settings" if r.get("as_recipe")
           else "a CPU-sized variant")
    rows = (f"Rows: at most {r['per_corpus']} clips per corpus (spread over speakers and classes, seeded), "
            f"{r.get('rows', '?')} scored in all (every row does not fit a benchmark run on the 2-core CPU: "
            "docs/finetune.md)" if r.get("per_corpus") else
            f"Rows: every poleval6 row of the six corpora ({r.get('rows', '?')} scored)")
    if r.get("languages"):
        rows += (f"; folds: held-out {', '.join(r['languages'])} only (the languages the target is about; every "
                 "other language, held out in no fold, is always training data)")
    lines = [
        "# Fine-tuned vs frozen whisper-base, zero-shot (leave one language out, poleval6)", "",
        f"What ran: `python benchmarks/finetune.py --part {part}{' --as-recipe' if r.get('as_recipe') else ''}"
        f"{' --per-corpus ' + str(r['per_corpus']) if r.get('per_corpus') else ' --per-corpus 0' if r.get('as_recipe') else ''}"
        f"{' --languages ' + ' '.join(r['languages']) if r.get('languages') else ''}"
        f"{' --control-layer ' + str(r['control']['layer']) if r.get('control') else ''}` ({how}). "
        f"Fine-tuning part `{part}` of recipes/poleval-finetune.yaml: {describe(r)}. {rows}; the frozen probe "
        "(cached fp32 features of whole clips, layer chosen on the same validation speakers, linear head, global "
        "normalisation) is run on exactly the same rows and folds.",
        "",
        "macro-F1 (%) of each held-out language, 95 % speaker-cluster bootstrap interval; the last column is the "
        "paired difference (fine-tuned minus probe) over the same speakers. Classes scored: the poleval6 classes "
        "each language has (" + "; ".join(f"{k}: {', '.join(v['classes'])}" for k, v in r["per_language"].items())
        + "). Means are over the held-out languages (one fold each), not pooled.", "",
        f"| language | rows | frozen probe | fine-tuned ({part}) | difference |", "|---|---:|---:|---:|---:|",
    ]
    for language, v in r["per_language"].items():
        p, t, d = v["frozen-probe"], v[part], v["difference"]
        lines.append(f"| {language} | {v['n']} | {100 * p['macro_f1']:.1f} [{100 * p['ci'][0]:.1f}, {100 * p['ci'][1]:.1f}] | "
                     f"{100 * t['macro_f1']:.1f} [{100 * t['ci'][0]:.1f}, {100 * t['ci'][1]:.1f}] | "
                     f"{100 * d['value']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] |")
    md = r.get("mean_difference")
    ci = f" [{100 * md['ci'][0]:+.1f}, {100 * md['ci'][1]:+.1f}]" if md else ""
    lines.append(f"| mean of {mean_label(r)} | | {100 * r['mean']['frozen-probe']:.1f} | {100 * r['mean'][part]:.1f} | "
                 f"{100 * (r['mean'][part] - r['mean']['frozen-probe']):+.1f}{ci} |")
    gap = r["mean"][part] - r["mean"]["frozen-probe"]
    verdict = ("meets" if gap > 0 else "does not meet")
    interval = ""
    if md:
        excludes = md["ci"][0] > 0 or md["ci"][1] < 0
        interval = (f"; 95 % interval of the mean paired difference [{100 * md['ci'][0]:+.1f}, {100 * md['ci'][1]:+.1f}], "
                    f"which {'excludes' if excludes else 'includes'} 0 (speakers resampled within each language)")
    if mean_label(r) == ", ".join(LANGUAGES):
        target = (f"Target (fine-tuning beats the frozen probe on the mean of de, en, it, ur): this run {verdict} it "
                  f"({100 * gap:+.1f} points{interval}).")
    else:  # a run of other folds (--languages am) does not assess the target
        target = (f"This run holds out {mean_label(r)}, not the target's de, en, it, ur: fine-tuned minus probe "
                  f"{100 * gap:+.1f} points{interval}.")
    lines += ["", f"{target} The fine-tuned model reads hidden state 3, the layer the probe's "
              "inner leave-one-language-out protocol chose (alone or with its neighbours) in every fold of "
              "benchmarks/results/zero_shot.md, each choice made without that fold's held-out language; the probe "
              "here chooses its layer on this run's validation speakers."]
    if r.get("folds"):
        lines += ["", "Per fold (fine-tuning): training / validation / test clips, optimiser steps, the epoch kept, "
                  "validation macro-F1 (%) per epoch, seconds per epoch (the first includes computing the frozen "
                  "prefix of clips not seen before) and the fold's seconds.", "",
                  "| fold | train | val | test | steps | best epoch | val macro-F1 per epoch | s per epoch | s |",
                  "|---|---:|---:|---:|---:|---:|---|---|---:|"]
        for f in r["folds"]:
            curve = ", ".join(f"{100 * v:.1f}" for v in f["val_macro_f1"] if v is not None)
            secs = ", ".join(f"{v:.0f}" for v in f["epoch_seconds"] if v is not None)
            lines.append(f"| {f['name']} | {f['n_train']} | {f['n_validation']} | {f['n_test']} | {f['steps']} | "
                         f"{f['best_epoch']} | {curve} | {secs} | {f['seconds'] or 0:.0f} |")
    c = r.get("control")
    if c:
        lines += ["", f"Control: the same probe with its layer fixed to hidden state {c['layer']} (the layer the "
                  "fine-tuned model reads; no choice on validation), same rows and folds"
                  + (f", {c['seconds']} s" if c.get("seconds") else "") + ".", "",
                  f"| language | probe, layer {c['layer']} | fine-tuned ({part}) | difference |", "|---|---:|---:|---:|"]
        for language, v in c["per_language"].items():
            p, t, d = v["frozen-probe"], v[part], v["difference"]
            lines.append(f"| {language} | {100 * p['macro_f1']:.1f} [{100 * p['ci'][0]:.1f}, {100 * p['ci'][1]:.1f}] | "
                         f"{100 * t['macro_f1']:.1f} | {100 * d['value']:+.1f} [{100 * d['ci'][0]:+.1f}, "
                         f"{100 * d['ci'][1]:+.1f}] |")
        cd = c["mean_difference"]
        lines.append(f"| mean of {mean_label(r)} | {100 * c['mean']['frozen-probe']:.1f} | {100 * c['mean'][part]:.1f} | "
                     f"{100 * cd['value']:+.1f} [{100 * cd['ci'][0]:+.1f}, {100 * cd['ci'][1]:+.1f}] |")
        lines += ["", f"Against this control fine-tuning is {100 * cd['value']:+.1f} points on the mean, an interval that "
                  f"{'excludes' if cd['ci'][0] > 0 or cd['ci'][1] < 0 else 'includes'} 0: most of the gain over the "
                  "probe above comes from reading hidden state 3 instead of the layer the probe picked on its small "
                  "validation sets." if cd["ci"][0] <= 0 else
                  f"Against this control fine-tuning is {100 * cd['value']:+.1f} points on the mean, an interval that excludes 0."]
    u = r.get("uniform_prior")
    if u:
        lines += ["", "Label-shift adaptation, deployable and unlabelled: `uniform-prior` (the held-out language's test "
                  "rows are one unlabelled batch; per-class logit offsets move its mean prediction to equally likely "
                  "classes) at strength 1, the adapter's definition fixed a priori (nothing chosen, no labels read), "
                  "applied to both models' probabilities. Plain numbers are the ones above.", "",
                  f"| language | probe | probe + uniform-prior | fine-tuned ({part}) | fine-tuned + uniform-prior | "
                  "difference (adapted) |", "|---|---:|---:|---:|---:|---:|"]
        for language, v in u["per_language"].items():
            plain = r["per_language"][language]
            p, t, d = v["frozen-probe"], v[part], v["difference"]
            lines.append(f"| {language} | {100 * plain['frozen-probe']['macro_f1']:.1f} | "
                         f"{100 * p['macro_f1']:.1f} [{100 * p['ci'][0]:.1f}, {100 * p['ci'][1]:.1f}] | "
                         f"{100 * plain[part]['macro_f1']:.1f} | "
                         f"{100 * t['macro_f1']:.1f} [{100 * t['ci'][0]:.1f}, {100 * t['ci'][1]:.1f}] | "
                         f"{100 * d['value']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] |")
        ud = u["mean_difference"]
        lines.append(f"| mean of {mean_label(r)} | {100 * r['mean']['frozen-probe']:.1f} | "
                     f"{100 * u['mean']['frozen-probe']:.1f} | {100 * r['mean'][part]:.1f} | {100 * u['mean'][part]:.1f} | "
                     f"{100 * ud['value']:+.1f} [{100 * ud['ci'][0]:+.1f}, {100 * ud['ci'][1]:+.1f}] |")
        worst = min(((100 * (v[part]["macro_f1"] - r["per_language"][k][part]["macro_f1"]), k)
                     for k, v in u["per_language"].items()), default=None)
        if worst:
            lines += ["", f"uniform-prior on the fine-tuned model: worst change vs its plain prediction {worst[0]:+.1f} "
                      f"({worst[1]})" + (" (more than 2 points lower)." if worst[0] < -2 else ".")]
    m = r["machine"]
    total = r["seconds"].get("total")
    lines += ["", f"Wall time: frozen probe {r['seconds']['frozen-probe']} s (cached features), fine-tuning "
              f"{r['seconds'][part]} s for all folds (decoding included)"
              + (f", {total} s in all" if total else "") + (f", nice {r['nice']}" if r.get("nice") is not None else ", nice 19 on a machine shared with other sessions")
              + f" (load average at the end {', '.join(f'{x:.1f}' for x in m['load_average'])}). Device: {r['device']}; "
              f"CPU {m['cpu']}, {m['cores']} cores, flags {', '.join(m['flags'])}, native bf16: "
              f"{m['bf16'].get('native_bf16')} (so fp32 throughout), torch threads {training.get('num_threads')}.", "",
              "The lead's full-data frozen probe (all clips, benchmarks/results/zero_shot.md) is a different "
              "protocol (inner leave-one-language-out choices); compare within this table only. Not claimed: the "
              "seed system's full fine-tuning of every block for 8 epochs (recipe part seed-full) did not run here; "
              "it needs a GPU (docs/finetune.md).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
