"""Model bundles: roundtrip, verification (tampered, missing, wrong encoder), atomic export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from polyemo.bundle import (
    BUNDLE_FILES,
    MANIFEST,
    BundleError,
    FeatureSpec,
    ModelCard,
    export_bundle,
    read_bundle,
    sha256_file,
)
from polyemo.labels import LabelSet

sys.path.insert(0, str(Path(__file__).resolve().parent / "serve"))
import polyemo_tiny_bundle as tiny  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, shared_corpora) -> Path:
    return tiny.shared_bundle(tmp_path_factory.getbasetemp(), shared_corpora)


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_roundtrip_files_config_and_predictions(bundle, shared_corpora):
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*BUNDLE_FILES, MANIFEST])
    manifest = json.loads((bundle / MANIFEST).read_text())
    for name in BUNDLE_FILES:
        assert manifest["files"][name]["sha256"] == sha256_file(bundle / name)

    loaded = read_bundle(bundle)
    assert loaded.labels.classes == list(tiny.EMOTIONS)
    assert loaded.dimensions == []
    assert loaded.config.features.encoder == tiny.ENCODER
    assert loaded.config.features.identity == tiny.encoder().identity.as_dict()
    assert loaded.config.normalisation.mode == "test-speaker"
    assert "transductive" in (bundle / "MODEL_CARD.md").read_text()
    assert loaded.config.normalisation.params == {"min_utterances": tiny.MIN_UTTERANCES}
    # Only training statistics travel; per-speaker statistics of the training data do not.
    assert sorted(loaded.normalisation_stats) == ["mean", "std"]
    assert loaded.config.card.corpora == ["emodb"]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "emodb" in card and "train_UA" in card and "whisper-tiny.en" in card

    # The loaded model gives exactly what the trained model gives on the same features.
    model, _, normaliser, _ = tiny.train_head(shared_corpora)
    state = model.state_dict()
    assert state.keys() == loaded.head_state.keys()
    for key in state:
        assert torch.equal(state[key], loaded.head_state[key])
    features, _, _ = tiny._features(shared_corpora)

    recogniser = tiny.recogniser(bundle)
    clips = tiny.training_clips(shared_corpora)
    # One speaker's clips as a group of >= min_utterances: speaker statistics as in training.
    speaker = clips["speaker"].value_counts().index[0]
    rows = clips[clips["speaker"] == speaker]
    assert len(rows) >= tiny.MIN_UTTERANCES
    predictions = recogniser.predict(list(rows["path"]), speakers=speaker)
    from polyemo.train.data import SplitData

    speaker_features = features[rows.index.to_numpy()]
    fresh = type(normaliser)(min_utterances=tiny.MIN_UTTERANCES)
    fresh.fallback = normaliser.fallback
    normalised = fresh.transform(SplitData(speaker_features, speakers=np.array([speaker] * len(rows), dtype=object)))
    with torch.inference_mode():
        reference = torch.softmax(model(torch.from_numpy(normalised.features))["emotion"], -1).numpy()
    got = np.array([[p.probabilities[c] for c in tiny.EMOTIONS] for p in predictions])
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert all(p.norm_source == f"speaker:{speaker} ({len(rows)} units)" for p in predictions)
    # A trained-on clip alone falls back to the training statistics, and still gets its label.
    single = recogniser.predict(rows["path"].iloc[0])[0]
    assert single.norm_source.startswith("training statistics")
    assert single.label in tiny.EMOTIONS and abs(sum(single.probabilities.values()) - 1) < 1e-4


def test_tampered_file_is_named(copy):
    data = bytearray((copy / "head.safetensors").read_bytes())
    data[-1] ^= 0x01  # flip one bit of one weight
    (copy / "head.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"head\.safetensors: SHA-256 mismatch") as info:
        read_bundle(copy)
    assert info.value.file == "head.safetensors"


def test_edited_config_is_tampering(copy):
    config = json.loads((copy / "config.json").read_text())
    config["normalisation"]["mode"] = "none"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"config\.json: SHA-256 mismatch"):
        read_bundle(copy)


@pytest.mark.parametrize("name", ["labels.json", "normalisation.safetensors", "manifest.json"])
def test_missing_file_is_named(copy, name):
    (copy / name).unlink()
    with pytest.raises(BundleError, match="missing") as info:
        read_bundle(copy)
    assert info.value.file == name and name in str(info.value)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such directory"):
        read_bundle(tmp_path / "nothing")


def test_wrong_encoder_identity(tmp_path, shared_corpora):
    identity = dict(tiny.encoder().identity.as_dict(), weights_hash="0123456789abcdef", key="not-the-key")
    path = tiny.export(tmp_path / "wrong", shared_corpora, identity=identity)
    read_bundle(path)  # the files themselves are fine
    from polyemo.predict import load_model

    with pytest.raises(BundleError, match=r"config\.json: encoder identity mismatch.*weights_hash '0123456789abcdef'"):
        load_model(path, encoder=tiny.encoder())


def test_unknown_encoder(tmp_path, shared_corpora):
    path = tiny.export(tmp_path / "unknown", shared_corpora, encoder_name="no-such-encoder-xyz")
    import polyemo

    with pytest.raises(BundleError, match=r"config\.json: .*encoder 'no-such-encoder-xyz'"):
        polyemo.load(path)


def test_export_is_atomic_and_refuses_to_overwrite(bundle, tmp_path, shared_corpora):
    model, config, normaliser, shape = tiny.train_head(shared_corpora)
    spec = FeatureSpec(encoder=tiny.ENCODER, identity=tiny.encoder().identity.as_dict(), feature_dim=shape[2])
    card = ModelCard(name="x")
    with pytest.raises(FileExistsError):
        export_bundle(bundle, model=model, head_config=config, features=spec,
                      labels=LabelSet(classes=list(tiny.EMOTIONS)), card=card)
    # A label set that does not fit the head fails before anything appears.
    target = tmp_path / "never"
    with pytest.raises(ValueError, match="classes"):
        export_bundle(target, model=model, head_config=config, features=spec,
                      labels=LabelSet(classes=["anger", "sadness"]), card=card)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    # Overwriting replaces the whole folder with a complete new bundle.
    first = export_bundle(target, model=model, head_config=config, features=spec,
                          labels=LabelSet(classes=list(tiny.EMOTIONS)), card=card, normaliser=normaliser)
    (first / "stray.txt").write_text("old")
    export_bundle(target, model=model, head_config=config, features=spec,
                  labels=LabelSet(classes=list(tiny.EMOTIONS)), card=ModelCard(name="y"), overwrite=True)
    assert read_bundle(target).name == "y" and not (target / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never"]


def test_dimensions_from_a_multitask_head(tmp_path, shared_corpora):
    path = tiny.export(tmp_path / "avd", shared_corpora, head="multitask", params={"avd_weight": 1.0},
                       normalisation="global")
    bundle = read_bundle(path)
    assert bundle.dimensions == ["arousal", "valence", "dominance"]
    recogniser = tiny.recogniser(path)
    clip = tiny.training_clips(shared_corpora)["path"].iloc[0]
    prediction = recogniser.predict(clip)[0]
    assert prediction.norm_source == "training statistics"
    for dim in ("arousal", "valence", "dominance"):
        assert isinstance(getattr(prediction, dim), float)
    assert set(prediction.to_dict()) >= {"arousal", "valence", "dominance"}


def test_import_polyemo_is_cheap():
    code = "import sys, polyemo; assert callable(polyemo.load); print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_exported_trainer_predicts_what_the_trainer_predicts(tmp_path, shared_corpora):
    """The training code path and the prediction path agree: layer choice, speaker statistics, head."""
    from polyemo.bundle import export_estimator
    from polyemo.heads import HeadConfig
    from polyemo.predict import load_model
    from polyemo.train.config import TrainConfig
    from polyemo.train.data import SplitData
    from polyemo.train.estimator import build_estimator

    features, labels, speakers = tiny._features(shared_corpora)
    loaded_layers = [1, 2, 4]  # the experiment loaded three encoder layers; the head picks index 1 (= layer 2)
    data = SplitData(features[:, loaded_layers], labels=labels, speakers=speakers)
    estimator = build_estimator(
        HeadConfig(name="linear", layers=1),
        TrainConfig(epochs=3, normalisation="speaker", speaker_min_utterances=tiny.MIN_UTTERANCES,
                    show_progress=False, patience=None),
        len(tiny.EMOTIONS), list(tiny.EMOTIONS))
    estimator.fit(data, data)
    path = export_estimator(tmp_path / "trained", estimator, encoder=tiny.ENCODER, identity=tiny.encoder().identity,
                            labels=LabelSet(classes=list(tiny.EMOTIONS)), card=ModelCard(name="trainer"),
                            encoder_layers=loaded_layers)
    bundle = read_bundle(path)
    assert bundle.config.features.layers == [2] and bundle.config.head.num_layers == 1

    clips = tiny.training_clips(shared_corpora)
    speaker = clips["speaker"].value_counts().index[0]
    rows = clips.index[clips["speaker"] == speaker].to_numpy()
    recogniser = load_model(path, encoder=tiny.encoder())
    got = recogniser.predict(list(clips["path"][rows]), speakers=speaker)
    # The trainer normalises a test speaker with that speaker's own statistics, as the bundle does.
    test = SplitData(features[rows][:, loaded_layers], speakers=np.array([f"test-{speaker}"] * len(rows), dtype=object))
    expected = estimator.predict(test).probabilities
    np.testing.assert_allclose([[p.probabilities[c] for c in tiny.EMOTIONS] for p in got], expected, atol=1e-5)


def test_frame_head_bundle_pads_batches_correctly(tmp_path, shared_corpora):
    """A frame-level head (random weights): batched, padded prediction equals one clip at a time."""
    from polyemo.heads import HeadConfig, build_head
    from polyemo.predict import load_model
    from polyemo.train.normalise import make_normaliser

    identity = tiny.encoder().identity
    torch.manual_seed(0)
    config = HeadConfig(name="attentive_stats", layers="weighted")
    model = build_head(config, 2, tiny.encoder().frame_dim, len(tiny.EMOTIONS)).eval()
    spec = FeatureSpec(encoder=tiny.ENCODER, identity=identity.as_dict(), layers=[3, 4], kind="frames",
                       feature_dim=tiny.encoder().frame_dim)
    path = export_bundle(tmp_path / "frames", model=model, head_config=config, features=spec,
                         labels=LabelSet(classes=list(tiny.EMOTIONS)), card=ModelCard(name="frames"),
                         normaliser=make_normaliser("utterance", axis="frames"))
    recogniser = load_model(path, encoder=tiny.encoder(), batch_size=4)
    clips = list(tiny.training_clips(shared_corpora)["path"][:3])  # different lengths
    together = recogniser.predict(clips)
    alone = [recogniser.predict(clip)[0] for clip in clips]
    for a, b in zip(together, alone):
        assert a.norm_source == "utterance"
        np.testing.assert_allclose([a.probabilities[c] for c in tiny.EMOTIONS],
                                   [b.probabilities[c] for c in tiny.EMOTIONS], atol=1e-5)
