"""The default model's recipe, measured: leave one language out with nested choices.

    python benchmarks/default_model.py [--out runs/default-model] [--corpora-root ../shared/corpora]
        [--only lolo] [--previous BUNDLE]

Runs ``polyemo bench recipes/default-model.yaml`` (the shipped default model: six corpora,
issue 12) (resumable; cached features) and writes benchmarks/results/default_model.{json,md}:
macro-F1 and UA per held-out language (mean of folds with its 95 % interval, pooled), what each
held-out language's model chose (layer input, sampling, normalisation, by an inner
leave-one-language-out over the OTHER languages only, with every candidate's inner score), the
final model's own choice over all five languages, and the plain score first with each test-time
adapter's score beside it, every strength chosen by the same inner protocol. No number here
chose anything: the choices are made inside each fold's training languages; the per-language
scores are the honest zero-shot estimates of the recipe. ``--only lolo`` runs just the
leave-one-language-out cell. ``--previous BUNDLE`` compares with an earlier default model: its
own leave-one-language-out scores, and its plain score on each language it never heard.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from polyemo.experiment import run_bench  # noqa: E402
from polyemo.experiment.final import read_final_info  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECIPE = HERE.parent / "recipes" / "default-model.yaml"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{_pct(ci[0])}, {_pct(ci[1])}]"


def _candidate(candidate: dict) -> str:
    """A short name: layers and how they are combined, then what else the candidate sets."""
    layers = candidate.get("layers")
    head = candidate.get("head") or {}
    parts = []
    if layers is not None:
        span = f"{layers[0]}-{layers[-1]}" if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)) else layers
        parts.append(f"layer {layers[0]}" if len(layers) == 1 else f"layers {span} {head.get('layers', '')}".rstrip())
    if head.get("name", "linear") != "linear":
        params = head.get("params") or {}
        parts.append(head["name"] + (f" C {params['C']}" if "C" in params else ""))
    sampling = (candidate.get("training") or {}).get("sampling")
    if sampling:
        parts.append(sampling.replace("_", "-"))
    if candidate.get("normalisation"):
        parts.append(f"{candidate['normalisation']} normalisation")
    rest = {k: v for k, v in candidate.items() if k not in ("layers", "head", "training", "normalisation")}
    parts += [f"{k} {v}" for k, v in rest.items()]
    return ", ".join(parts) or "the recipe's base"


def unseen_language_scores(bundle_path: Path, corpora_root: Path | None, cache: Path | None = None) -> dict:
    """A bundle's macro-F1 on each shared categorical corpus language it was NOT trained on:
    an honest zero-shot score (nothing of that language took part in training or choices).
    Cached features of the bundle's layers, its normaliser and head, as ``polyemo predict``
    would run them on each clip; scored on the classes the language has, with a 95 %
    speaker-cluster bootstrap interval."""
    from default_model_state import bundle_manifest, bundle_rows

    from polyemo.bundle import read_bundle
    from polyemo.metrics import evaluate_classification
    from polyemo.predict.adapt import predict_rows
    from polyemo.predict.engine import load_model

    bundle = read_bundle(bundle_path)
    seen = set((bundle.metrics.get("final_model") or {}).get("languages") or [])
    if not seen:
        raise SystemExit(f"{bundle_path}: metrics.json names no training languages")
    recogniser = load_model(bundle_path)
    out = {}
    for corpus in _recipe_corpora():
        manifest = bundle_manifest(bundle, [corpus], corpora_root, cache)
        languages = set(manifest["language"].astype(str))
        if languages & seen:
            continue
        rows, ok = bundle_rows(bundle, manifest, cache)
        probabilities, _ = predict_rows(recogniser, rows)
        kept = manifest[ok].reset_index(drop=True)
        result = evaluate_classification(kept["label"].astype(str).to_numpy(), probabilities.argmax(1),
                                         list(bundle.labels.classes), groups=kept["speaker"].astype(str).to_numpy(),
                                         n_boot=1000)
        for language in sorted(languages):
            out[language] = {"corpus": corpus, "n": int(ok.sum()), "n_failed": int((~ok).sum()),
                             "macro_f1": result.macro_f1, "ci": [result.ci["macro_f1"].low, result.ci["macro_f1"].high],
                             "classes": result.evaluated_classes}
    return out


def _recipe_corpora() -> list[str]:
    import yaml

    return yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["base"]["corpora"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE.parent / "runs" / "default-model")
    parser.add_argument("--corpora-root", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="cell ids to run (default: all)")
    parser.add_argument("--previous", type=Path, default=None,
                        help="an earlier default-model bundle to compare with, e.g. the four-language one: "
                             "git archive 5acb3dc src/polyemo/data/default-model | tar -x -C /tmp/previous")
    args = parser.parse_args()
    overrides = {} if args.corpora_root is None else {"corpora_root": str(args.corpora_root.resolve())}
    started = time.perf_counter()
    bench = run_bench(RECIPE, args.out, overrides=overrides, progress=False, only=args.only)
    seconds = time.perf_counter() - started
    lolo = bench.results["lolo"]
    cell = args.out / "cells" / "lolo"
    folds = []
    for fold in lolo.folds:
        record = json.loads((cell / "folds" / fold.name / "fold.json").read_text(encoding="utf-8"))
        selection = record["selection"]
        folds.append({
            "held_out": fold.info.get("target"), "n_test": fold.n_test, "classes": fold.scored_classes or fold.classes,
            "macro_f1": fold.macro_f1, "ua": fold.ua, "wa": fold.wa, "n_fit": record["n_fit"],
            "chosen": selection["candidates"][selection["chosen"]],
            "inner": [{"candidate": c, "score": s} for c, s in zip(selection["candidates"], selection["scores"])],
            "inner_test_groups": selection["inner_test_groups"], "seconds": record.get("seconds"),
        })
    final = read_final_info(cell)
    adaptation_file = cell / "adaptation.json"
    adaptation = json.loads(adaptation_file.read_text(encoding="utf-8")) if adaptation_file.is_file() else None
    final_adaptation_file = cell / "final" / "adaptation.json"
    final_adaptation = (json.loads(final_adaptation_file.read_text(encoding="utf-8"))
                        if final_adaptation_file.is_file() else None)
    previous = None
    if args.previous is not None:
        from polyemo.bundle import read_bundle

        old = read_bundle(args.previous)
        scores = {lang: {**row, "source": "lolo"}
                  for lang, row in old.metrics["runs"].get("lolo", {}).get("per_language", {}).items()}
        scores.update({lang: {**row, "source": "unseen"}
                       for lang, row in unseen_language_scores(args.previous, args.corpora_root).items()})
        previous = {"bundle": str(args.previous), "name": old.config.name,
                    "languages": sorted(old.metrics["final_model"].get("languages") or []), "scores": scores}
    report = {
        "recipe": str(RECIPE), "previous": previous, "headline": lolo.headline, "seconds": round(seconds, 1),
        "mean_of_folds": lolo.mean_of_folds, "mean_of_folds_ci": lolo.mean_of_folds_ci,
        "pooled": lolo.pooled, "pooled_ci": lolo.pooled_ci, "folds": folds,
        "final_model": None if final is None else {"selection": final.selection, "chosen": final.chosen,
                                                   "refit": final.refit, "encoder_layers": final.encoder_layers},
        "emobox": {"headline": bench.results["emobox"].headline} if "emobox" in bench.results else None,
        "adaptation": adaptation, "final_adaptation": final_adaptation,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "default_model.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")

    candidates = [row["candidate"] for row in folds[0]["inner"]] if folds else []
    lines = [
        "# The default model's recipe: leave one language out, the layer and the adaptation strengths nested", "",
        "EmoDB (de), RAVDESS + SAVEE (en), EMOVO (it), URDU (ur), ASED (am); ekman7 (anger, disgust, fear, happiness, neutral, "
        "sadness, surprise; a held-out language is scored on the classes it has); frozen whisper-base fp32, pooled; a "
        "masked linear softmax layer (cross-entropy, epoch on held-out training speakers), refit on train + "
        "validation. The layer input (layer 3, layers 1-6 weighted, layers 2-4 concatenated), the sampling (natural, "
        "class-balanced, corpus-balanced) and the normalisation (global training statistics, or each utterance on "
        "its own) are chosen for each held-out language by an inner leave-one-language-out over the OTHER four "
        "languages (mean macro-F1), and so is every adapter's strength; the held-out language plays no part in "
        "those choices (recipes/default-model.yaml).", "",
        f"**{lolo.headline}**", "",
        "| held-out language | test rows | classes | macro-F1 % | UA % | WA % | chosen (inner LOLO on the others) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in folds:
        lines.append(f"| {row['held_out']} | {row['n_test']} | {len(row['classes'])} | {_pct(row['macro_f1'])} | "
                     f"{_pct(row['ua'])} | {_pct(row['wa'])} | {_candidate(row['chosen'])} |")
    mean, ci = lolo.mean_of_folds, lolo.mean_of_folds_ci
    lines.append(f"| **mean of languages** | | | {_pct(mean['macro_f1'])}{_ci(ci.get('macro_f1'))} | "
                 f"{_pct(mean['ua'])}{_ci(ci.get('ua'))} | {_pct(mean['wa'])} | |")
    lines += ["", "Inner mean macro-F1 (%) of every candidate, per held-out language (chosen in bold):", "",
              "| held-out language | " + " | ".join(_candidate(c) for c in candidates) + " |",
              "|---|" + "---:|" * len(candidates)]
    for row in folds:
        best = max(range(len(row["inner"])), key=lambda i: row["inner"][i]["score"])
        cells = [("**" if i == best else "") + _pct(r["score"]) + ("**" if i == best else "")
                 for i, r in enumerate(row["inner"])]
        lines.append(f"| {row['held_out']} | " + " | ".join(cells) + " |")
    if final is not None and final.selection:
        chosen = final.selection["candidates"][final.selection["chosen"]]
        lines += ["", f"Final (bundled) model: chosen by leave-one-language-out over all five languages: "
                      f"**{_candidate(chosen)}** (inner mean macro-F1 "
                      + ", ".join(f"{_candidate(c)}: {_pct(s)}" for c, s in zip(final.selection["candidates"],
                                                                                  final.selection["scores"]))
                      + f"); refitted on {final.refit['n_rows'] if final.refit else '?'} utterances."]
    if adaptation is not None:
        section = (cell / "adaptation.md").read_text(encoding="utf-8")
        lines += ["", section.replace("## Test-time adaptation (unlabelled test batch)",
                                     "## Test-time adaptation on the unlabelled test batch (issue 12)", 1).rstrip()]
    if final_adaptation is not None:
        chosen = ", ".join(f"{name} {json.dumps(settings)}" for name, settings in final_adaptation["settings"].items())
        inner = "; ".join(f"{name}: " + ", ".join(f"{c.get('strength')}: {_pct(s)}" for c, s in
                                                 zip(sel["candidates"], sel["scores"]))
                          for name, sel in final_adaptation["selection"].items())
        lines += ["", f"Final (bundled) model's adapter settings, chosen by {final_adaptation['chosen_by']}: {chosen} "
                      f"(inner mean macro-F1 per strength: {inner}); it ships "
                      f"**{final_adaptation['ships'] or 'no adapter (none gained on the inner protocol)'}**."]
    if previous is not None:
        ships = (final_adaptation or {}).get("ships")
        adapted = (adaptation or {}).get("scores", {}).get(ships, {}).get("folds", {}) if ships else {}
        by_fold = {row["held_out"]: name for name, row in zip([f.name for f in lolo.folds], folds)}
        scores = previous["scores"]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        shared = [row for row in sorted(folds, key=lambda r: r["held_out"]) if row["held_out"] in scores]
        lines += ["", f"Against the previous default model ({previous['bundle']}: {previous['name']}, trained on "
                      f"{', '.join(previous['languages'])}), macro-F1 % per held-out language: its own "
                      "leave-one-language-out scores (its metrics.json) for the languages it was trained on, and for "
                      "each language it never heard its plain score on all of that language's clips "
                      "(`unseen_language_scores`): "
                      + ", ".join(f"{row['held_out']} {_pct(scores[row['held_out']]['macro_f1'])}"
                                  + ("" if scores[row['held_out']]["source"] == "lolo" else
                                     f" [{_pct(scores[row['held_out']]['ci'][0])}, {_pct(scores[row['held_out']]['ci'][1])}]"
                                     " (never heard)")
                                  for row in shared)
                      + f", mean {_pct(mean([scores[row['held_out']]['macro_f1'] for row in shared]))}; this recipe plain "
                      + ", ".join(f"{row['held_out']} {_pct(row['macro_f1'])}" for row in shared)
                      + f", mean {_pct(mean([row['macro_f1'] for row in shared]))}"
                      + (f"; + {ships} mean {_pct(mean([adapted[by_fold[row['held_out']]] for row in shared]))}"
                         if adapted else "") + "."]
    if report["emobox"]:
        lines += ["", f"Each corpus on its own (EmoBox's published folds, choices on validation speakers): "
                      f"{report['emobox']['headline']}."]
    fold_seconds = sum(row["seconds"] or 0 for row in folds)  # each fold's own time, also when reused
    lines += ["", f"Time: {seconds:.0f} s for this call (finished cells and folds are reused); the lolo cell's folds took "
                  f"{fold_seconds:.0f} s when they ran (its final model and adapter choice not included); "
                  f"{os.cpu_count()} CPUs.", ""]
    (RESULTS / "default_model.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
