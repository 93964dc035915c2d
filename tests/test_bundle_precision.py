"""A bundle names encoder weights and layers, not a precision: it reads fp32 or bf16 features alike.

The agreement test runs the packaged default model (trained on fp32 whisper-base features)
on 24 real EmoDB clips with the encoder in fp32 and in bf16. bf16 is emulated on CPUs
without AVX512-BF16/AMX (about 3x the fp32 time here), so all 535 clips are in
``benchmarks/precision_agreement.py`` (benchmarks/results/precision_agreement.md: 534 of 535
labels equal, 99.8 %; largest probability difference 0.026, mean 0.0011).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from polyemo.bundle import BundleError, FeatureSpec, check_encoder_identity, read_bundle
from polyemo.encoders.base import EncoderIdentity
from polyemo.predict import default_model_path, load_model

# Measured on these 24 clips (AMD EPYC, bf16 emulated): 23 of 24 labels equal, largest
# probability difference 0.026, mean 0.0012. The tolerances leave room for other CPUs' bf16 kernels.
MAX_LABEL_CHANGES = 1
MAX_PROBABILITY_DIFFERENCE = 0.06
MEAN_PROBABILITY_DIFFERENCE = 0.005


def emodb_subset(corpora, n: int = 24) -> list[str]:
    """Every (535 // n)-th EmoDB clip in path order: ten speakers, six emotions."""
    manifest = pd.read_csv(corpora / "emodb" / "manifest.csv", dtype={"speaker": str}).sort_values("path")
    picked = manifest.iloc[:: len(manifest) // n][:n]
    return [str(corpora / "emodb" / p) for p in picked["path"]]


def _identity(**changes) -> dict:
    identity = dict(read_bundle(default_model_path()).config.features.identity)
    base = EncoderIdentity(identity["name"], identity["weights_hash"], identity["precision"], identity["options"])
    for key, value in changes.items():
        setattr(base, key, value)
    return base.as_dict()


def test_the_default_model_records_its_training_precision_not_a_required_one():
    bundle = read_bundle(default_model_path())
    features = bundle.config.features
    assert features.trained_precision == features.identity["precision"] == "fp32"
    assert features.precision == "fp32"  # deprecated name still answers
    assert "trained on fp32 features" in bundle.card_markdown and "auto" in bundle.card_markdown
    check_encoder_identity(bundle, _identity(precision="bf16"))  # same weights in another precision
    check_encoder_identity(bundle, _identity(precision="int8"))
    with pytest.raises(BundleError, match="weights_hash"):
        check_encoder_identity(bundle, _identity(weights_hash="0" * 16, precision="bf16"))
    with pytest.raises(BundleError, match="options"):
        check_encoder_identity(bundle, _identity(options={**features.identity["options"], "trim": False}))


def test_bundles_written_with_a_precision_field_still_read():
    identity = _identity()
    spec = {"encoder": "whisper-base", "identity": identity, "layers": [3], "kind": "pooled", "feature_dim": 1024}
    legacy = FeatureSpec(**spec, precision="fp32")
    assert legacy.trained_precision == "fp32" and "precision" not in legacy.model_dump()
    assert FeatureSpec(**spec).trained_precision == "fp32"  # from the identity
    with pytest.raises(ValueError, match="differs"):
        FeatureSpec(**spec, precision="bf16")
    with pytest.raises(ValueError, match="differs"):
        FeatureSpec(**spec, trained_precision="bf16")


def test_a_bad_precision_is_a_bundle_error_naming_it():
    with pytest.raises(BundleError, match="precision must be one of"):
        load_model(precision="fp8")


@pytest.mark.slow
def test_fp32_and_bf16_features_give_the_same_labels(shared_corpora):
    paths = emodb_subset(shared_corpora)
    fp32 = load_model(precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "bf16 is emulated" where it is not native
        bf16 = load_model(precision="bf16")
    assert fp32.encoder.identity.precision == "fp32" and bf16.encoder.identity.precision == "bf16"
    assert bf16.describe()["trained_precision"] == "fp32" and bf16.describe()["precision"] == "bf16"
    runs = [r.predict(paths) for r in (fp32, bf16)]
    labels = [np.array([p.label for p in run]) for run in runs]
    probs = [np.array([[p.probabilities[c] for c in fp32.classes] for p in run]) for run in runs]
    changed = int((labels[0] != labels[1]).sum())
    difference = np.abs(probs[0] - probs[1])
    assert changed <= MAX_LABEL_CHANGES, (changed, labels)
    assert difference.max() <= MAX_PROBABILITY_DIFFERENCE, difference.max()
    assert difference.mean() <= MEAN_PROBABILITY_DIFFERENCE, difference.mean()
    assert len(set(labels[0])) >= 3  # a real spread of predictions, not one class everywhere


def test_predict_and_serve_take_a_precision_option():
    from typer.testing import CliRunner

    from polyemo.cli import app

    hello = str(default_model_path().parents[3] / "examples" / "hello.wav")
    for command in (["predict", hello], ["serve"]):
        result = CliRunner().invoke(app, [*command, "--precision", "fp8"])
        assert result.exit_code == 2 and "precision must be one of auto, fp32, bf16, int8" in result.output, result.output


def test_feature_code_versions_are_checked_and_library_drift_is_named():
    from dataclasses import replace

    bundle = read_bundle(default_model_path())
    trained = {"feature_code": "1", "torch": "2.13.0", "numpy": "2.0.0"}
    versioned = replace(bundle, config=bundle.config.model_copy(deep=True))
    versioned.config.features.identity = {**_identity(), "versions": trained, "key": "trained-key"}
    check_encoder_identity(bundle, _identity(versions=trained))  # an old bundle (no versions) accepts any
    with pytest.raises(BundleError, match="feature code version 1, this polyemo computes version 2"):
        check_encoder_identity(versioned, _identity(versions={**trained, "feature_code": "2"}))
    with pytest.warns(UserWarning, match=r"torch 2\.13\.0 -> 2\.14\.0"):
        check_encoder_identity(versioned, _identity(versions={**trained, "torch": "2.14.0"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_encoder_identity(versioned, _identity(versions=trained))
