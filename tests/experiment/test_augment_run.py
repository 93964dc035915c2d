"""encoder.augment: training rows get features of augmented copies of their audio, cached once
per copy; validation and test rows never do; configs without it keep their fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyemo.experiment import run_experiment
from polyemo.experiment.config import experiment_from_dict
from polyemo.splits import Split


def _config(shared_corpora, feature_cache, **extra):
    return {
        "name": "augment", "corpora": ["emodb"], "corpora_root": str(shared_corpora),
        "protocol": {"name": "speaker_kfold", "params": {"k": 3}},
        "encoder": {"name": "test-band-layers", "layers": [2], "cache_dir": str(feature_cache), **extra},
        "head": {"name": "logreg"}, "limit": {"per_corpus": 45}, "metrics": {"n_boot": 20},
    }


def test_only_training_rows_get_augmented_copies(shared_corpora, feature_cache, tmp_path, fitted_rows):
    augment = {"copies": 2, "p": 1.0, "reverb_rt60": [0.2, 0.3]}
    result = run_experiment(_config(shared_corpora, feature_cache, augment=augment), tmp_path / "run", progress=False)
    split = Split.load(Path(result.out_dir) / "split")
    assert len(fitted_rows) == 3 * 2  # per fold the fit and its refit on train + validation
    for index, fold in enumerate(split.folds):
        fit, refit = fitted_rows[2 * index], fitted_rows[2 * index + 1]
        for seen in (fit, refit):
            copies = {u for u in seen if "#augment" in u}
            originals = {u.split("#augment")[0] for u in copies}
            assert originals == set(fold.train)  # every training row, no validation or test row
            assert {u.rsplit("#augment", 1)[1] for u in copies} == {"0", "1"}
            assert not (seen - copies) & set(fold.test)
    # each copy has its own store in the cache (named after the encoder), beside the plain features
    stores = [p.name for p in Path(feature_cache).iterdir() if p.name.startswith("test-band-layers_augment-")]
    assert len(stores) == 2


def test_fingerprints_without_augmentation_are_unchanged(shared_corpora, feature_cache):
    plain = experiment_from_dict(_config(shared_corpora, feature_cache))
    none = experiment_from_dict(_config(shared_corpora, feature_cache, augment=None))
    augmented = experiment_from_dict(_config(shared_corpora, feature_cache, augment={"copies": 1}))
    assert plain.fingerprint() == none.fingerprint() != augmented.fingerprint()
    assert "augment" not in plain.resolved()["encoder"] or plain.resolved()["encoder"]["augment"] is None


def test_bad_augmentation_names_the_setting(shared_corpora, feature_cache):
    with pytest.raises(Exception, match="augment"):
        experiment_from_dict(_config(shared_corpora, feature_cache, augment={"speed": [1.2, 0.8]}))


def test_a_select_candidate_turns_augmentation_off(shared_corpora, feature_cache):
    from polyemo.experiment.selection import apply_candidate

    data = _config(shared_corpora, feature_cache, augment={"copies": 1})
    data["select"] = {"by": "validation", "candidates": [{"augment": None}, {}]}
    config = experiment_from_dict(data)
    assert apply_candidate(config, {"augment": None}).encoder.augment is None
    assert apply_candidate(config, {}).encoder.augment.copies == 1


def test_the_augment_recipe_pair_chooses_copies_or_none_by_the_inner_protocol():
    import yaml

    from polyemo.experiment.grid import load_bench

    repo = Path(__file__).resolve().parents[2]
    bench, cells = load_bench(repo / "recipes" / "zero-shot-augment.yaml")
    [cell] = cells
    assert cell.config.protocol.name == "leave_one_language_out" and cell.config.encoder.augment is not None
    tta = yaml.safe_load((repo / "recipes" / "zero-shot-augment-tta.yaml").read_text())
    options = tta["domain_generalisation"]
    assert options[0] == {"augment": None}  # the baseline first: ties go to it
    assert options[1]["augment"] == cell.config.encoder.augment.model_dump(mode="json")
