"""``polyemo predict --adapt`` (issue 12): the whole input as one unlabelled batch.

A real bundle: a linear head on whisper-tiny.en features of 24 EmoDB clips (global statistics),
exported with its adaptation state (source prior, normalised feature moments). The batches are
real EmoDB clips of two other speakers, of two emotions only (a label-shifted batch).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyemo.bundle import AdaptationSpec, read_bundle
from polyemo.predict import load_model, predict_files, read_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import polyemo_tiny_bundle as tiny  # noqa: E402

SPEAKERS = ("13", "14")  # not among the tiny model's first training speakers' clips below


def _bundle(target: Path, corpora: Path, adaptation: bool = True) -> Path:
    import torch

    from polyemo.bundle import FeatureSpec, ModelCard, export_bundle
    from polyemo.labels import LabelSet
    from polyemo.train.data import SplitData

    model, config, normaliser, shape = tiny.train_head(corpora, "global")
    features, _, speakers = tiny._features(corpora)
    x = normaliser.transform(SplitData(features, speakers=speakers)).features
    with torch.no_grad():
        prior = torch.softmax(model(torch.from_numpy(np.asarray(x, dtype=np.float32)))["emotion"], -1).mean(0).numpy()
    state = None
    if adaptation:
        spec = AdaptationSpec(settings={"prior-em": {"strength": 1.0, "floor": 0.1}, "tent": {"strength": 0.5}},
                              chosen_by="test: fixed settings", ships="prior-em", enrol=2, n_rows=len(x))
        state = (spec, {"source_prior": prior, "feature_mean": x.mean(0), "feature_std": x.std(0)})
    spec = FeatureSpec(encoder=tiny.ENCODER, identity=tiny.encoder().identity.as_dict(), kind="pooled",
                       feature_dim=shape[2])
    card = ModelCard(name="tiny-adapt", corpora=["emodb"], languages=["de"], protocol="none")
    return export_bundle(target, model=model, head_config=config, features=spec,
                         labels=LabelSet(name="big4", classes=list(tiny.EMOTIONS)), card=card, normaliser=normaliser,
                         overwrite=True, adaptation=state)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, shared_corpora) -> Path:
    return _bundle(tmp_path_factory.mktemp("adapt") / "bundle", shared_corpora)


@pytest.fixture(scope="module")
def recogniser(bundle):
    return load_model(bundle, encoder=tiny.encoder())


@pytest.fixture(scope="module")
def shifted(shared_corpora) -> pd.DataFrame:
    """Eight anger and sadness clips (no happiness, no neutral) of two unseen speakers."""
    manifest = pd.read_csv(shared_corpora / "emodb" / "manifest.csv", dtype={"speaker": str})
    picked = manifest[manifest["speaker"].isin(SPEAKERS) & manifest["emotion"].isin(["anger", "sadness"])]
    picked = picked.sort_values("path").groupby(["speaker", "emotion"]).head(3)
    return picked.assign(path=[str(shared_corpora / "emodb" / p) for p in picked["path"]]).reset_index(drop=True)


def _probs(rows) -> np.ndarray:
    return np.array([[r["probabilities"][c] for c in tiny.EMOTIONS] for r in rows])


def test_the_bundle_round_trips_the_adaptation_state(bundle):
    read = read_bundle(bundle)
    assert read.config.adaptation.settings["prior-em"] == {"strength": 1.0, "floor": 0.1}
    assert read.config.adaptation.ships == "prior-em" and read.config.adaptation.enrol == 2
    prior = read.adaptation_stats["source_prior"]
    assert prior.shape == (4,) and abs(prior.sum() - 1) < 1e-5
    assert read.adaptation_stats["feature_mean"].shape == read.adaptation_stats["feature_std"].shape
    assert "adaptation.safetensors" in (bundle / "manifest.json").read_text()
    # a tampered state is refused by name
    damaged = bundle.parent / "damaged"
    shutil.copytree(bundle, damaged, dirs_exist_ok=True)
    (damaged / "adaptation.safetensors").write_bytes(b"x" + (damaged / "adaptation.safetensors").read_bytes()[1:])
    with pytest.raises(ValueError, match="adaptation.safetensors: SHA-256 mismatch"):
        read_bundle(damaged)


@pytest.mark.parametrize("adapt", ["prior", "uniform-prior", "tent", "adabn", "adabn-tent"])
def test_batch_adaptation_differs_from_plain_and_never_reads_labels(recogniser, shifted, tmp_path, adapt):
    listing = tmp_path / "list.csv"
    shifted[["path", "speaker", "emotion"]].rename(columns={"emotion": "label"}).to_csv(listing, index=False)
    plain = predict_files(recogniser, listing, tmp_path / "plain.jsonl", show_progress=False)
    adapted = predict_files(recogniser, listing, tmp_path / "adapted.jsonl", show_progress=False, adapt=adapt)
    assert adapted.predicted == plain.predicted == len(shifted)
    p0, p1 = _probs(plain.records), _probs(adapted.records)
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-4)
    assert np.abs(p1 - p0).max() > 1e-3, "adaptation changed nothing on a label-shifted batch"
    assert all("adaptation" not in r for r in plain.records)
    names = {"prior": "prior-em", "uniform-prior": "uniform-prior", "tent": "tent", "adabn": "adabn",
             "adabn-tent": "adabn-tent"}
    assert all(r["adaptation"].startswith(names[adapt]) and f"batch of {len(shifted)}" in r["adaptation"]
               for r in adapted.records)
    if adapt == "tent":  # the bundle's chosen strength is used, and said so
        assert "strength=0.5" in adapted.records[0]["adaptation"] and "test: fixed settings" in adapted.notes[0]
    # labels scrambled (and a label column the predictor never reads): the same output
    scrambled = shifted.assign(emotion=np.random.default_rng(0).permutation(shifted["emotion"].to_numpy()))
    scrambled[["path", "speaker", "emotion"]].rename(columns={"emotion": "label"}).to_csv(listing, index=False)
    again = predict_files(recogniser, listing, None, show_progress=False, adapt=adapt)
    np.testing.assert_allclose(_probs(again.records), p1, atol=1e-6)
    # CSV output says which adaptation was applied
    out = tmp_path / "adapted.csv"
    predict_files(recogniser, listing, out, show_progress=False, adapt=adapt)
    assert pd.read_csv(out)["adaptation"].str.startswith(names[adapt]).all()


def test_a_one_file_batch_keeps_plain_predictions_with_a_message(recogniser, shifted, tmp_path):
    one = shifted["path"][0]
    plain = predict_files(recogniser, one, None, show_progress=False)
    with pytest.warns(UserWarning, match="too small"):
        via_api = recogniser.predict([one], adapt="prior")
    adapted = predict_files(recogniser, one, None, show_progress=False, adapt="prior")
    assert any("too small" in n and "plain predictions" in n for n in adapted.notes)
    assert adapted.records[0]["adaptation"].startswith("none (batch of 1 < 4")
    np.testing.assert_allclose(_probs(adapted.records), _probs(plain.records), atol=1e-6)
    assert via_api[0].adaptation.startswith("none (batch of 1")
    from polyemo.predict import adapt_predictions

    batch = adapt_predictions(recogniser, list(shifted["path"]), "uniform-prior")
    assert all(p.adaptation.startswith("uniform-prior") for p in batch)


def test_enrolled_marks_enrolment_clips_and_predicts_them_too(recogniser, shifted, tmp_path):
    root = tmp_path / "speakers"
    for row in shifted.itertuples():
        target = root / f"spk{row.speaker}" / Path(row.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, target)
    plain = predict_files(recogniser, root, None, show_progress=False)
    summary = predict_files(recogniser, root, tmp_path / "e.jsonl", show_progress=False, adapt="enrolled", enrol=2)
    rows = read_output(tmp_path / "e.jsonl")
    assert len(rows) == len(shifted) == summary.predicted  # enrolment clips are predicted too
    by_speaker: dict[str, list[dict]] = {}
    for row in rows:
        by_speaker.setdefault(Path(row["path"]).parent.name, []).append(row)
    for speaker, speaker_rows in by_speaker.items():
        assert sum(r["enrolment"] for r in speaker_rows) == 2  # k=2 of each speaker's 6
        assert all(r["adaptation"] == f"enrolled (speaker:{speaker}: statistics of 2 enrolment recordings of 6, k=2)"
                   for r in speaker_rows)
    plain_by_path = {r["path"]: r for r in plain.records}
    assert max(np.abs(_probs([r]) - _probs([plain_by_path[r["path"]]])).max() for r in rows) > 1e-3
    # the enrolment clips do not change with what else is in the batch (chosen per speaker, from the seed)
    again = predict_files(recogniser, root, None, show_progress=False, adapt="enrolled", enrol=2)
    assert {r["path"] for r in again.records if r["enrolment"]} == {r["path"] for r in rows if r["enrolment"]}
    # speakers from a list's speaker column
    listing = tmp_path / "list.csv"
    shifted[["path", "speaker"]].to_csv(listing, index=False)
    from_list = predict_files(recogniser, listing, None, show_progress=False, adapt="enrolled", enrol=3)
    assert sum(r["enrolment"] for r in from_list.records) == 6


def test_enrolled_without_speakers_is_a_clear_error(recogniser, shifted, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in shifted["path"][:3]:
        shutil.copy(path, flat / Path(path).name)
    with pytest.raises(ValueError, match="one sub-folder per speaker"):
        predict_files(recogniser, flat, None, show_progress=False, adapt="enrolled")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(shifted["path"][:3]))
    with pytest.raises(ValueError, match="'speaker'"):
        predict_files(recogniser, listing, None, show_progress=False, adapt="enrolled")
    with pytest.raises(ValueError, match="unknown adaptation"):
        predict_files(recogniser, listing, None, show_progress=False, adapt="magic")


def test_a_bundle_without_a_source_prior_says_so(tmp_path, shared_corpora, shifted):
    old = load_model(_bundle(tmp_path / "old", shared_corpora, adaptation=False), encoder=tiny.encoder())
    with pytest.raises(ValueError, match="source prior"):
        predict_files(old, shifted["path"][0], None, show_progress=False, adapt="prior")
    summary = predict_files(old, shifted["path"][0], None, show_progress=False, adapt="uniform-prior")
    assert summary.predicted == 1  # needs nothing from training; too small here, so plain
    listing = tmp_path / "list.csv"
    shifted[["path", "speaker"]].to_csv(listing, index=False)
    # a globally normalised head saw mean 0 in training: enrolled centres each speaker there, and says so
    enrolled = predict_files(old, listing, None, show_progress=False, adapt="enrolled", enrol=2)
    assert any("no training feature moments" in note for note in enrolled.notes)
    assert sum(r["enrolment"] for r in enrolled.records) == 4


def test_cli_predict_adapt(bundle, shifted, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import polyemo.predict
    from polyemo.cli import app

    real_load = polyemo.predict.load_model
    monkeypatch.setattr(polyemo.predict, "load_model", lambda path, **kw: real_load(path, encoder=tiny.encoder(), **kw))
    listing = tmp_path / "list.csv"
    shifted[["path", "speaker"]].to_csv(listing, index=False)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", str(listing), "--model", str(bundle), "-o", str(out), "--adapt",
                                      "prior", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "prior-em" in result.output and f"{len(shifted)} predicted" in result.output
    assert pd.read_csv(out)["adaptation"].str.startswith("prior-em").all()
    result = CliRunner().invoke(app, ["predict", str(listing), "--model", str(bundle), "--adapt", "nope"])
    assert result.exit_code == 2 and "--adapt" in result.output
