"""Give the packaged default model (exported before issue 12) its test-time adaptation state.

    python benchmarks/default_model_state.py [--bundle src/polyemo/data/default-model]

The bundle's final model was trained on the rows its metrics.json names (corpora, label set,
``manifest_sha256``). This script rebuilds exactly those rows from the shared corpora (it
refuses if their fingerprint differs), reads their cached whisper-base features of the
bundle's layers, and stores what ``polyemo predict --adapt`` needs: the model's source prior
(its mean prediction on those rows; ``prior``) and the moments of its normalised features
(``adabn``, ``enrolled``). Weights, normaliser and labels stay as they were; no score is
chosen or changed. Adapter settings are the defaults (strength 1.0), said so in the bundle.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTION = (
    "The bundle carries the model's source prior over its {n} training utterances (its mean predicted "
    "probability on them) and the moments of the features its head saw, added after training by "
    "`benchmarks/default_model_state.py` from the same rows (their fingerprint checked against the run's). "
    "`polyemo predict FOLDER --adapt NAME` adapts to the whole input as one unlabelled batch: `prior` (EM "
    "re-estimation of the class priors), `uniform-prior`, `tent`, `adabn` (the batch's own feature "
    "statistics), `adabn-tent`, or `enrolled` (k clips per speaker). Every adapter runs at its default "
    "strength 1.0: this model's run made no inner choice of it. Measured on held-out languages: "
    "benchmarks/results/zero_shot.md.")


def bundle_manifest(bundle, corpora: list[str], corpora_root: Path | None, cache: Path | None = None):
    """The rows of ``corpora`` in the bundle's label set, as the experiment that trained it built them."""
    from polyemo.experiment.config import experiment_from_dict
    from polyemo.experiment.data import experiment_manifest

    encoder = {"name": bundle.config.features.encoder, "layers": list(bundle.config.features.layers or [])}
    if cache is not None:
        encoder["cache_dir"] = str(cache)
    root = {} if corpora_root is None else {"corpora_root": str(corpora_root)}
    config = experiment_from_dict({"name": "default-model-rows", "corpora": list(corpora), "labels": bundle.labels.name,
                                   "protocol": "loso", "encoder": encoder, **root})
    manifest, _ = experiment_manifest(config)
    return manifest


def bundle_rows(bundle, manifest, cache: Path | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The cached features of the bundle's layers for every row that has them ((L, D) each,
    before normalisation), and which rows do (``ok``)."""
    from polyemo.cache import features

    layers = list(bundle.config.features.layers or [])
    extracted = features(manifest, bundle.config.features.encoder, layers=layers, cache_dir=cache, progress=True)
    ok = np.asarray(extracted.ok, dtype=bool)
    positions = [list(extracted.layers).index(layer) for layer in layers]
    return [np.asarray(a[positions], dtype=np.float32) for a, k in zip(extracted.array, ok) if k], ok


def main() -> None:
    from polyemo.bundle import AdaptationSpec, add_adaptation_state, read_bundle
    from polyemo.predict.adapt import adaptation_state_of
    from polyemo.predict.engine import default_model_path, load_model
    from polyemo.splits.model import manifest_sha256

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the packaged model)")
    parser.add_argument("--corpora-root", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache (default: the user cache)")
    args = parser.parse_args()
    path = args.bundle or default_model_path()
    bundle = read_bundle(path)
    final = bundle.metrics.get("final_model") or {}
    if not final.get("corpora") or not final.get("manifest_sha256"):
        raise SystemExit(f"{path}: metrics.json names no final model's rows (corpora, manifest_sha256)")
    manifest = bundle_manifest(bundle, final["corpora"], args.corpora_root, args.cache)
    n_rows = int(final.get("n_train", 0)) + int(final.get("n_validation", 0))
    if manifest_sha256(manifest) != final["manifest_sha256"] or len(manifest) != n_rows:
        raise SystemExit(f"{path}: the rebuilt rows ({len(manifest)}) are not the {n_rows} the model was trained on "
                         "(manifest fingerprint differs)")
    rows, ok = bundle_rows(bundle, manifest, args.cache)
    if not ok.all():
        raise SystemExit(f"{path}: {int((~ok).sum())} training rows have no features")
    recogniser = load_model(path)
    state = adaptation_state_of(recogniser, rows)
    spec = AdaptationSpec(chosen_by="default settings (strength 1.0): no inner choice was made; state added after "
                                    "training from the model's own training rows (benchmarks/default_model_state.py)",
                          n_rows=len(rows))
    add_adaptation_state(path, spec, state, section=SECTION.format(n=len(rows)))
    print(json.dumps({"bundle": str(path), "rows": len(rows),
                      "source_prior": dict(zip(bundle.labels.classes, np.round(state["source_prior"], 4).tolist()))},
                     indent=2))


if __name__ == "__main__":
    main()
