"""Zero-shot languages: leave one language out over de, en, it, ur, am on poleval6, every
choice by an inner leave-one-language-out over the TRAINING languages; the plain number
(no target data) first, each deployable test-time adaptation beside it.

    python benchmarks/zero_shot.py [--cache DIR] [--recipe recipes/zero-shot.yaml]
        [--tta recipes/zero-shot-tta.yaml] [--languages de en] [--no-dg] [--n-boot 1000]

Per held-out language (outer fold), on its training languages only (inner folds):
1. the layer input: the recipe's ``select`` candidates (one layer, learned layer weights,
   concatenated layers);
2. the training-side domain-generalisation option (``domain_generalisation`` of the tta
   recipe): each option is also fitted on the whole fold and scored on the held-out language,
   so the table shows what each would have given (measured, not chosen on it);
3. each adapter's strength (``adaptation``), applied to the unlabelled held-out batch of the
   chosen model.
Then the other deployments (``deployments``: enrolled-speaker, test-speaker) are trained with
the same choices. Results: benchmarks/results/zero_shot.{json,md}. The machine may be
shared: timings pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from polyemo.experiment.config import experiment_from_dict  # noqa: E402
from polyemo.experiment.data import TARGET_COLUMN, experiment_manifest  # noqa: E402
from polyemo.experiment.inputs import CachedFeatures, fold_class_masks, shared_encoder  # noqa: E402
from polyemo.experiment.plan import FeatureRequest, resolve_plan  # noqa: E402
from polyemo.experiment.selection import (  # noqa: E402
    SelectSpec,
    apply_candidate,
    choose_adaptation,
    choose_candidate,
    fit_on_training,
    scored_rows,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LANGUAGES = ["de", "en", "it", "ur", "am"]
#: reference lines: PolEval 2025, macro-F1 on six classes, on the hidden POLISH test sets
ANCHORS = [
    ("PolEval 2025 baseline (Qwen2-Audio, zero-shot prompting)", "0.18"),
    ("zero-shot seed system (WavLM-Base+ fine-tuned on 29.7k CAMEO utterances, 7 languages)", "0.53 / 0.52"),
    ("challenge winner: frozen HuBERT features", "0.62"),
    ("challenge winner with unlabelled speaker adaptation", "0.75"),
]


def _label(candidate: dict[str, Any]) -> str:
    if set(candidate) == {"head"} and isinstance(candidate["head"], dict) and not candidate["head"].get("layers"):
        return f"{candidate['head']['name']} head"
    if "head" in candidate and isinstance(candidate["head"], dict) and candidate["head"].get("layers"):
        return f"layers {candidate['layers'][0]}-{candidate['layers'][-1]} {candidate['head']['layers']}"
    if "layers" in candidate:
        return f"layer {candidate['layers'][0]}" if len(candidate["layers"]) == 1 else f"layers {candidate['layers']}"
    if "normalisation" in candidate:
        return str(candidate["normalisation"])
    if "training" in candidate:
        return ", ".join(f"{k} {v}" if k == "adversarial" else f"{v}" for k, v in candidate["training"].items())
    if "augment" in candidate:
        return "no augmentation" if candidate["augment"] is None else "augmented copies"
    if not candidate:
        return "recipe as written"
    return json.dumps(candidate)


class Fold:
    """The held-out language's rows and what each model predicted for them."""

    def __init__(self, language: str, classes: list[str]) -> None:
        self.language = language
        self.classes = classes
        self.rows: dict[str, pd.DataFrame] = {}  # row name -> utt_id, speaker, true, pred
        self.record: dict[str, Any] = {"language": language}

    def save(self, path: Path) -> None:
        blob = {"language": self.language, "classes": self.classes, "record": self.record,
                "rows": {k: v.to_dict(orient="list") for k, v in self.rows.items()}}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(blob) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Fold:
        blob = json.loads(path.read_text(encoding="utf-8"))
        fold = cls(blob["language"], blob["classes"])
        fold.record = blob["record"]
        fold.rows = {k: pd.DataFrame(v) for k, v in blob["rows"].items()}
        return fold

    def add(self, name: str, test_rows: pd.DataFrame, fold_classes: list[str], probabilities: np.ndarray) -> None:
        self.rows[name] = pd.DataFrame({
            "speaker": test_rows["speaker"].astype(str).to_numpy(),
            "corpus": test_rows["corpus"].astype(str).to_numpy(),
            "true": test_rows[TARGET_COLUMN].astype(str).to_numpy(),
            "pred": [fold_classes[i] for i in np.asarray(probabilities).argmax(1)],
        })


def run_fold(config, tta: dict[str, Any], plan, inputs, fold, *, dg: bool, log, refit_inner: bool = False) -> Fold:
    from polyemo.train import SealedSplit

    parts = plan.split.frames(plan.manifest, fold.name)
    train_rows, val_rows, test_rows = parts["train"], parts["validation"], parts["test"]
    classes = [c for c in plan.classes if c in set(train_rows[TARGET_COLUMN])]
    language = str(fold.info["target"])
    out = Fold(language, classes)
    quiet = config.train_config(show_progress=False, log_path=None, checkpoint_path=None)

    def settings(c):  # a candidate's own training settings (normalisation, sampling, adversarial)
        return c.train_config(show_progress=False, log_path=None, checkpoint_path=None)

    started = time.perf_counter()
    # Inner folds score their models without the refit on train + validation (half the fits on
    # a shared 2-core machine); the outer models are refitted as the recipe says.
    inner = (lambda c: c.model_copy(update={"training": {**c.training, "refit": False}})) if not refit_inner else (lambda c: c)

    # 1. layer input, by the inner leave-one-language-out over the training languages
    candidates = config.select.expanded() if config.select is not None else [{}]
    # the inner protocol of the later choices: the recipe's select, else leave one language out
    inner_by, inner_params, inner_metric = ((config.select.by, config.select.params, config.select.metric)
                                            if config.select is not None else ("leave_one_language_out", {}, None))
    if len(candidates) == 1:  # nothing to choose (a recipe without select): no inner fits
        chosen = apply_candidate(config, candidates[0])
        out.record["layer_input"] = {"chosen": _label(candidates[0]), "inner_scores": {}}
    else:
        layer_choice = choose_candidate(inner(config), train_rows, val_rows, inputs, classes, quiet)
        chosen = apply_candidate(config, layer_choice.choice)
        out.record["layer_input"] = {"chosen": _label(layer_choice.choice),
                                     "inner_scores": {_label(c): s for c, s in zip(layer_choice.candidates,
                                                                                  layer_choice.scores)}}
    log(f"{language}: layer input {out.record['layer_input']['chosen']} ({time.perf_counter() - started:.0f} s)")

    masks = fold_class_masks(pd.concat([train_rows, val_rows]), classes)

    def test_of(fitted):
        data = fitted.prepare(inputs.split_data(test_rows, classes, masks), inputs.layers)
        return data, SealedSplit(data, name=f"{fold.name} test")

    # 2. domain generalisation: inner choice, and every option measured on the held-out language
    options = tta.get("domain_generalisation") or [{}]
    fitted_by_option = {}
    if dg and len(options) > 1:
        spec = SelectSpec(by=inner_by, params=inner_params, metric=inner_metric, candidates=options)
        dg_choice = choose_candidate(inner(chosen).model_copy(update={"select": spec}), train_rows, val_rows, inputs,
                                     classes, quiet)
        best = dg_choice.chosen
        out.record["domain_generalisation"] = {
            "chosen": _label(dg_choice.choice),
            "inner_scores": {_label(c): s for c, s in zip(dg_choice.candidates, dg_choice.scores)}}
        for j, option in enumerate(options):
            sub = apply_candidate(chosen, option)
            fitted = fit_on_training(sub, train_rows, val_rows, inputs, classes, settings(sub))
            data, sealed = test_of(fitted)
            out.add(f"dg:{_label(option)}", test_rows, classes,
                    fitted.estimator.predict(sealed.open(fitted.report.receipt)).probabilities)
            fitted_by_option[j] = (sub, fitted, data)
        log(f"{language}: domain generalisation {_label(dg_choice.choice)} ({time.perf_counter() - started:.0f} s)")
    else:
        best = 0
        sub = apply_candidate(chosen, options[0]) if options[0] else chosen
        fitted = fit_on_training(sub, train_rows, val_rows, inputs, classes, settings(sub))
        fitted_by_option[0] = (sub, fitted, test_of(fitted)[0])
    final_config, fitted, test_data = fitted_by_option[best]
    plain = fitted.estimator.predict(test_data).probabilities  # the same rows the sealed split held
    out.add("plain", test_rows, classes, plain)

    # 3. test-time adaptation of the chosen model, strengths by the inner protocol
    adaptation = tta.get("adaptation") or {}
    if adaptation:
        from polyemo.train.adaptation import make_adapter

        records = choose_adaptation(inner(final_config), train_rows, val_rows, inputs, classes, adaptation,
                                    by=inner_by, params=inner_params)
        fit_data = fitted.prepare(inputs.split_data(pd.concat([train_rows, val_rows]), classes, masks), inputs.layers)
        out.record["adaptation"] = {}
        for name, record in records.items():
            adapter = make_adapter(name, **record.choice).fit(fitted.estimator, fit_data)
            out.add(name, test_rows, classes, adapter.adapt(fitted.estimator, test_data, plain))
            out.record["adaptation"][name] = {"chosen": record.choice, "inner_scores": record.scores}
        log(f"{language}: adaptation {({k: r.choice for k, r in records.items()})} ({time.perf_counter() - started:.0f} s)")

    # 4. other deployments with the same choices
    for name, update in (tta.get("deployments") or {}).items():
        sub = apply_candidate(final_config, update)
        other = fit_on_training(sub, train_rows, val_rows, inputs, classes, settings(sub))
        data, sealed = test_of(other)
        probabilities = other.estimator.predict(sealed.open(other.report.receipt)).probabilities
        scored = scored_rows(other.estimator, data)
        out.add(name, test_rows[scored], classes, probabilities[scored])
        out.record.setdefault("n_enrolment", {})[name] = int((~scored).sum())
    out.record["seconds"] = round(time.perf_counter() - started, 1)
    log(f"{language}: done in {out.record['seconds']} s")
    return out


def score(folds: list[Fold], classes: list[str], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    from polyemo.metrics import FoldPredictions, aggregate_folds

    names = list(dict.fromkeys(n for f in folds for n in f.rows))
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        have = [f for f in folds if name in f.rows]
        preds = [FoldPredictions(y_true=f.rows[name]["true"].tolist(), y_pred=f.rows[name]["pred"].tolist(),
                                 name=f.language, groups=f.rows[name]["speaker"].tolist(),
                                 strata=f.rows[name]["corpus"].tolist()) for f in have]
        agg = aggregate_folds(preds, labels=classes, task="classification", n_boot=n_boot, seed=seed,
                              strata_name="test corpora")
        row = {f.language: {"macro_f1": float(m.macro_f1), "ua": float(m.ua), "n": len(f.rows[name]),
                            "classes": list(m.evaluated_classes)} for f, m in zip(have, agg.folds)}
        stat = agg.mean_of_folds["macro_f1"]
        row["mean"] = {"macro_f1": float(stat.mean),
                       "ci95": None if stat.ci is None else [float(stat.ci.low), float(stat.ci.high)]}
        table[name] = row
    return table


FINETUNED = "dg:fine-tuned"
FINETUNED_UNIFORM = "dg:fine-tuned + uniform-prior"


def add_finetuned(folds: list[Fold], run: Path) -> None:
    """The fine-tuned part's held-out predictions (``run/predictions.csv``) as two more rows of
    each language it held out: plain, and after ``uniform-prior`` at strength 1 (fixed a priori)
    on that language's unlabelled batch. Its test rows must be the plain model's."""
    from finetune import uniform_prior_frame  # benchmarks/finetune.py: the same adaptation of its tables

    frame = pd.read_csv(run / "predictions.csv", dtype={"true": str, "pred": str, "speaker": str})
    adapted = uniform_prior_frame(frame)
    for fold in folds:
        rows = (frame["language"].astype(str) == fold.language).to_numpy()
        if not rows.any():
            continue
        tuned, plain = frame[rows], fold.rows["plain"]
        if sorted(tuned["true"]) != sorted(plain["true"]) or sorted(tuned["speaker"]) != sorted(plain["speaker"]):
            raise SystemExit(f"{run}: the held-out {fold.language} rows differ from the zero-shot benchmark's "
                             f"({len(tuned)} vs {len(plain)}): not the same rows, not comparable")
        base = pd.DataFrame({"speaker": tuned["speaker"].to_numpy(), "corpus": tuned["corpus"].astype(str).to_numpy(),
                             "true": tuned["true"].to_numpy()})
        fold.rows[FINETUNED] = base.assign(pred=tuned["pred"].to_numpy())
        fold.rows[FINETUNED_UNIFORM] = base.assign(pred=adapted.loc[rows, "pred"].to_numpy())
        fold.record.setdefault("finetuned", []).append(str(run))


ROW_TEXT = {
    "plain": "**plain** (no target data: training statistics)",
    "prior-em": "+ prior-em (label shift: EM class priors on the unlabelled batch)",
    "uniform-prior": "+ uniform-prior (batch mean moved to equal classes)",
    "tent": "+ tent (entropy-minimised normalisation, 10 steps, from the training statistics)",
    "adabn": "+ adabn (the batch's own feature statistics)",
    "adabn-tent": "+ adabn-tent (the batch's statistics, then 10 tent steps)",
    "enrolled-speaker": "enrolled-speaker (5 clips per test speaker, not scored)",
    "test-speaker": "test-speaker (all of each speaker's clips; transductive)",
}


DG_TEXT = {
    FINETUNED: "fine-tuned whisper-base (block 2 trained, hidden state 3; issue 11)",
    FINETUNED_UNIFORM: "fine-tuned + uniform-prior (strength 1, a priori)",
}


def _grid_text(folds, config, tta, args) -> str:
    options = tta.get("domain_generalisation") or []
    ran_dg = any("domain_generalisation" in f.record for f in folds)
    dg = (f"{len(options)} domain-generalisation options ({', '.join(_label(o) for o in options)})" if ran_dg
          else "no domain-generalisation options (--no-dg)")
    rows = f"at most {args.limit} utterances per corpus (--limit)" if args.limit else "every utterance"
    select = (f"{len(config.select.expanded())} candidates of the recipe's select" if config.select is not None
              else "no select (the recipe's one head, nothing chosen)")
    outer = ("the outer models are refitted" if config.training.get("refit", True) is not False
             else "no model is refitted: the recipe's refit: false keeps the epoch chosen on validation speakers")
    return (f"Grid: {select}, {dg}; rows: {rows}; inner folds score their models "
            f"without the refit on train + validation ({outer}). Each language may run as its "
            "own job (--languages xx); the table scores every language file present.\n")


def markdown(table, folds, languages, seconds, args, config, tta) -> str:
    def cell(row, lang):
        return "—" if lang not in row else f"{100 * row[lang]['macro_f1']:.1f}"

    def mean(row):
        ci = row["mean"]["ci95"]
        return f"{100 * row['mean']['macro_f1']:.1f}" + ("" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]")

    plain = table.get("plain", {})
    header = ["| deployment | " + " | ".join(languages) + " | mean [95% CI] | worst change vs plain |",
              "|---|" + "---:|" * (len(languages) + 2)]
    lines = ["# Zero-shot languages: leave one language out (de, en, it, ur, am), poleval6, whisper-base", "",
             "macro-F1 (%) on the held-out language, over the poleval6 classes that language has (am: 5, no "
             "surprise; de: 5, no surprise; ur: 4). `mean`: mean over the held-out languages, 95 % interval from a "
             "speaker-cluster bootstrap within each language. Every choice (layer input, domain-generalisation "
             "option, adaptation strength) was made in each fold by an inner leave-one-language-out over its "
             "TRAINING languages; no held-out row took part in any choice. The adapted rows re-predict the plain "
             "model's held-out batch without labels.", "",
             "## Plain and test-time adaptation (the chosen model)", "", *header]
    adapters = list(tta.get("adaptation") or {})
    order = ["plain", *[k for k in adapters if k in table],
             *[k for k in table if k in ("enrolled-speaker", "test-speaker")]]
    for name in order:
        row = table[name]
        worst = ""
        if name != "plain" and plain:
            changes = {lang: 100 * (row[lang]["macro_f1"] - plain[lang]["macro_f1"]) for lang in languages
                       if lang in row and lang in plain}
            lang = min(changes, key=changes.get)
            worst = f"{changes[lang]:+.1f} ({lang})"
        lines.append(f"| {ROW_TEXT.get(name, name)} | " + " | ".join(cell(row, l) for l in languages)
                     + f" | {mean(row)} | {worst} |")
    dg_rows = [k for k in table if k.startswith("dg:")]
    if dg_rows:
        lines += ["", "## Training-side domain generalisation (each option measured; one chosen per fold by the inner "
                      "protocol, that one is **plain** above)", "", *header]
        base = table[dg_rows[0]]
        for name in dg_rows:
            row = table[name]
            changes = {lang: 100 * (row[lang]["macro_f1"] - base[lang]["macro_f1"]) for lang in languages if lang in row}
            lang = min(changes, key=changes.get)
            lines.append(f"| {DG_TEXT.get(name, name[3:])} | " + " | ".join(cell(row, l) for l in languages)
                         + f" | {mean(row)} | {changes[lang]:+.1f} ({lang}) vs {dg_rows[0][3:]} |")
        if FINETUNED in table:
            runs = sorted({r for f in folds for r in f.record.get("finetuned", [])})
            lines += ["", "The fine-tuned rows are not a candidate of the inner protocol (fine-tuning every inner fold "
                      "does not fit the 2-core CPU): recipes/poleval-finetune.yaml part cpu-top-block with its settings "
                      "fixed a priori, its epoch chosen on validation speakers of the training languages, the same "
                      "held-out rows (runs: " + ", ".join(runs) + "; benchmarks/results/finetune_full.md and finetune_full_am.md). "
                      "uniform-prior there is at strength 1, not chosen."]
    lines += ["", "## Choices (inner leave-one-language-out over the training languages)", "",
              "| held out | layer input | domain generalisation | adaptation settings | seconds |", "|---|---|---|---|---:|"]
    for f in folds:
        r = f.record
        adapt = "; ".join(f"{k}: {v['chosen']}" for k, v in r.get("adaptation", {}).items())
        lines.append(f"| {f.language} | {r['layer_input']['chosen']} | {r.get('domain_generalisation', {}).get('chosen', '—')} "
                     f"| {adapt} | {r['seconds']} |")
    lines += ["", "## Anchors (PolEval 2025: a DIFFERENT test set, Polish; macro-F1 on six classes; not comparable "
                  "number for number)", ""]
    lines += [f"- {text}: {value}" for text, value in ANCHORS]
    lines += ["", f"Time: {seconds:.0f} s summed over the languages (wall time of their jobs), with cached {config.encoder.name} {config.features} features (shared 2-core machine). "
                  f"Recipe: {args.recipe.name} + {getattr(args.tta, 'name', args.tta)}; candidates of the recipe's select: "
                  + (", ".join(_label(c) for c in config.select.expanded()) if config.select is not None else "none")
                  + ". Training: " + json.dumps(config.training) + ". "
                  + _grid_text(folds, config, tta, args)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="feature cache (default: the user cache)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--recipe", type=Path, default=HERE.parent / "recipes" / "zero-shot.yaml")
    parser.add_argument("--tta", type=Path, default=HERE.parent / "recipes" / "zero-shot-tta.yaml",
                        help="what the benchmark adds (domain generalisation, adapters); 'none': the recipe alone")
    parser.add_argument("--languages", nargs="*", default=None,
                        help="held-out languages to run now (default: all five; none: only re-score the saved ones)")
    parser.add_argument("--no-dg", action="store_true", help="skip the domain-generalisation options")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="at most N utterances per corpus (smoke runs)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where STEM.{json,md} go")
    parser.add_argument("--stem", default="zero_shot", help="file name of the results (default zero_shot)")
    parser.add_argument("--finetuned", type=Path, nargs="*", default=None,
                        help="run folders of a fine-tuning part (benchmarks/finetune.py --out X: X/cpu-top-block) whose "
                             "held-out predictions join the domain-generalisation table, plain and + uniform-prior")
    parser.add_argument("--folds", type=Path, default=None,
                        help="per-language files (choices, predictions); default RESULTS/zero_shot_folds")
    args = parser.parse_args()
    started = time.perf_counter()
    bench = yaml.safe_load(args.recipe.read_text(encoding="utf-8"))
    tta = {} if str(args.tta) == "none" else yaml.safe_load(args.tta.read_text(encoding="utf-8"))
    overrides = {"encoder.precision": args.precision}
    if args.cache is not None:
        overrides["encoder.cache_dir"] = str(args.cache)
    if args.limit is not None:
        overrides["limit.per_corpus"] = args.limit
    config = experiment_from_dict({"name": "zero-shot", **bench["base"]}, str(args.recipe), args.recipe.resolve().parent,
                                  overrides)
    manifest, _ = experiment_manifest(config)
    request = FeatureRequest.of(config)
    inputs = CachedFeatures.extract(config.name, manifest, request, shared_encoder(config), progress=False,
                                    failures_path=None)
    # One file per held-out language (its choices and predictions), so each language can run as
    # a job of its own; the report scores every language file present.
    fold_dir = args.folds or args.results / f"{args.stem}_folds"
    fold_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zero-shot-") as scratch:
        plan = resolve_plan(config, Path(scratch), inputs.manifest, request)
        for fold in plan.split.folds:
            language = str(fold.info["target"])
            if args.languages is not None and language not in args.languages:
                continue
            done = run_fold(config, tta, plan, inputs, fold, dg=not args.no_dg, log=lambda text: print(text, flush=True))
            done.save(fold_dir / f"{language}.json")
    folds = [Fold.load(path) for lang in LANGUAGES if (path := fold_dir / f"{lang}.json").exists()]
    for run in args.finetuned or []:
        add_finetuned(folds, run)
    table = score(folds, plan.classes, args.n_boot, config.seed)
    seconds = sum(f.record["seconds"] for f in folds)
    languages = [lang for lang in LANGUAGES if any(f.language == lang for f in folds)]
    report = {"recipe": str(args.recipe), "tta": str(args.tta), "seconds": round(seconds, 1), "table": table,
              "folds": [f.record for f in folds], "anchors": dict(ANCHORS), "load_average_at_end": os.getloadavg()}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = markdown(table, folds, languages, seconds, args, config, tta)
    (args.results / f"{args.stem}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
