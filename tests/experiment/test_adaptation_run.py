"""Adapters in ``polyemo run`` (issue 12): a tiny real-data leave-one-language-out run.

Four corpora (de, it, en, ur), 60 utterances each, whisper-base layer 3 from the shared
feature cache, logistic regression. The report shows the plain score first and each adapter
beside it with intervals; every adapter's strength is chosen by the inner protocol over the
fold's TRAINING languages; the exported bundle carries the final model's chosen settings.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from polyemo.experiment import run_experiment

CORPORA = ["emodb", "emovo", "savee", "urdu"]


@pytest.fixture(scope="module")
def adapted_run(shared_corpora, tmp_path_factory):
    config = {
        "name": "tiny-adapt", "corpora": CORPORA, "corpora_root": str(shared_corpora), "labels": "poleval6",
        "protocol": "leave_one_language_out", "encoder": {"name": "whisper-base", "layers": [3]},
        "head": {"name": "logreg", "params": {"C": 0.1}}, "normalisation": "global",
        "limit": {"per_corpus": 60}, "metrics": {"n_boot": 50}, "seed": 0, "final_model": True,
        "adaptation": {"adapters": ["tent", "uniform-prior"], "choose_by": "inner-lolo", "strengths": [0.0, 1.0],
                       "params": {"tent": {"steps": 5}}},
    }
    out = tmp_path_factory.mktemp("runs") / "adapt"
    return run_experiment(config, out, progress=False), out


def test_the_report_shows_plain_first_and_each_adapter_with_intervals(adapted_run):
    result, out = adapted_run
    report = (out / "report.md").read_text()
    section = report[report.index("## Test-time adaptation"):]
    lines = [line for line in section.splitlines() if line.startswith("| plain") or line.startswith("| + ")]
    assert [line.split("|")[1].strip() for line in lines] == ["plain (no adaptation)", "+ tent", "+ uniform-prior"]
    assert all(line.count("[") >= 2 for line in lines)  # mean of folds and pooled, each with its interval
    scores = json.loads((out / "adaptation.json").read_text())["scores"]
    assert scores["plain"]["mean_of_folds"]["macro_f1"] == pytest.approx(result.mean_of_folds["macro_f1"])
    for name in ("tent", "uniform-prior"):
        assert set(scores[name]["folds"]) == {f.name for f in result.folds}
        assert 0.0 <= scores[name]["mean_of_folds"]["macro_f1"] <= 1.0


def test_strengths_are_chosen_on_the_training_languages_only(adapted_run):
    result, out = adapted_run
    for fold in result.folds:
        record = json.loads((out / "folds" / fold.name / "fold.json").read_text())
        held_out = record["info"]["target"]
        for name in ("tent", "uniform-prior"):
            chosen = record["adaptation"][name]
            selection = chosen["selection"]
            groups = {g for inner in selection["inner_test_groups"] for g in inner}
            assert held_out not in groups and len(groups) == 3  # the other three languages, each in turn
            assert chosen["settings"] == selection["candidates"][selection["chosen"]]
            assert selection["scores"][selection["chosen"]] == max(selection["scores"])
        plain = pd.read_csv(out / "folds" / fold.name / "predictions.csv")
        adapted = pd.read_csv(out / "folds" / fold.name / "predictions.adapt-uniform-prior.csv")
        assert list(adapted["utt_id"]) == list(plain["utt_id"])  # the same scored rows, adapted
        if record["adaptation"]["uniform-prior"]["settings"]["strength"] == 0.0:
            np.testing.assert_allclose(adapted.filter(like="p_").to_numpy(), plain.filter(like="p_").to_numpy(), atol=1e-9)


def test_the_exported_bundle_stores_the_chosen_settings(adapted_run, tmp_path):
    from polyemo.bundle import read_bundle
    from polyemo.experiment.export import export_run

    _, out = adapted_run
    final = json.loads((out / "final" / "adaptation.json").read_text())
    bundle = read_bundle(export_run(out, tmp_path / "bundle"))
    spec = bundle.config.adaptation
    assert spec is not None and spec.settings == final["settings"]
    assert set(spec.settings) == {"tent", "uniform-prior"} and spec.chosen_by.startswith("inner leave_one_language_out")
    assert spec.n_rows == 240
    for name in ("tent", "uniform-prior"):
        groups = {g for inner in spec.selection[name]["inner_test_groups"] for g in inner}
        assert groups == {"de", "it", "en", "ur"}  # the final model's choice: all its own languages in turn
    prior = bundle.adaptation_stats["source_prior"]
    assert prior.shape == (len(bundle.labels.classes),) and abs(float(prior.sum()) - 1) < 1e-4
    assert "Test-time adaptation" in bundle.card_markdown and "plain (no adaptation)" in bundle.card_markdown
    if spec.ships is not None:
        assert any(spec.ships in key for key in bundle.config.card.scores)


def test_a_run_without_adapters_still_bundles_the_state_with_default_strengths(shared_corpora, tmp_path):
    """Every final model's bundle can adapt: the source prior is always stored; without an
    inner choice the settings are strength 1.0, and the bundle says so."""
    from polyemo.bundle import read_bundle
    from polyemo.experiment.export import export_run
    from polyemo.predict.adapt import adapter_settings

    config = {
        "name": "tiny-plain", "corpora": ["emodb", "emovo"], "corpora_root": str(shared_corpora), "labels": "poleval6",
        "protocol": "leave_one_language_out", "encoder": {"name": "whisper-base", "layers": [3]},
        "head": {"name": "logreg", "params": {"C": 0.1}}, "normalisation": "global",
        "limit": {"per_corpus": 40}, "metrics": {"n_boot": 20}, "seed": 0, "final_model": True,
    }
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "adaptation.json").exists() and "Test-time adaptation" not in (
        tmp_path / "run" / "report.md").read_text()
    bundle = read_bundle(export_run(tmp_path / "run", tmp_path / "bundle"))
    spec = bundle.config.adaptation
    assert spec.settings == {} and spec.ships is None and spec.chosen_by.startswith("default settings (strength 1.0)")
    assert spec.n_rows == result.n_utterances
    settings, source = adapter_settings(bundle, "prior-em")
    assert settings == {"strength": 1.0} and source.startswith("default strength 1.0")
