"""The default model that ships inside the package: verified, loadable offline, predicting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyemo.bundle import BUNDLE_FILES, read_bundle, verify_bundle
from polyemo.labels import label_set
from polyemo.predict import default_model_path, load_model

REPO = Path(__file__).resolve().parents[1]
HELLO = REPO / "examples" / "hello.wav"
EKMAN7 = label_set("ekman7").classes
# Clips of a speaker the model was trained on (emodb/03): they check that class order,
# layer and normalisation survived the export, not how well the model generalises.
EMODB_CLIPS = {"03a01Wa": "anger", "03a02Nc": "neutral", "03a02Ta": "sadness"}


@pytest.fixture(scope="module")
def recogniser():
    return load_model()  # no path: the packaged default model


def test_default_model_is_packaged_small_and_verified():
    path = default_model_path()
    assert path.parent.parent == Path(__import__("polyemo").__file__).parent  # polyemo/data/default-model
    hashes = verify_bundle(path)
    assert set(BUNDLE_FILES) <= set(hashes)
    assert sum(p.stat().st_size for p in path.iterdir()) < 400_000  # three layers of weights and moments
    bundle = read_bundle(path)
    assert bundle.labels.classes == EKMAN7 and bundle.dimensions == []
    features = bundle.config.features
    assert (features.encoder, features.kind) == ("whisper-base", "pooled") and features.layers
    assert bundle.config.normalisation.mode in ("global", "utterance") and bundle.config.head.config["name"] == "linear"

    card = bundle.card_markdown
    for text in ("EmoBox folds", "Leave one language out", "CC BY-NC-SA", "## Limitations", "emodb", "urdu", "ased"):
        assert text in card, text
    runs = bundle.metrics["runs"]
    assert sorted(runs["lolo"]["per_language"]) == ["am", "de", "en", "it", "ur"]  # every categorical corpus (issue 12)
    assert sorted(runs["emobox"]["per_corpus"]) == ["ased", "emodb", "emovo", "ravdess", "savee", "urdu"]
    for scores in (*runs["lolo"]["per_language"].values(), *runs["emobox"]["per_corpus"].values()):
        assert 1 / 7 < scores["ua"] <= 1  # better than chance on every corpus and held-out language
    assert bundle.config.card.scores["leave-one-language-out macro-F1, mean over languages"] == pytest.approx(
        runs["lolo"]["mean_of_folds"]["macro_f1"])


def test_every_choice_of_the_default_model_was_made_on_its_training_data():
    """The bundle's layer input, sampling and normalisation come from an inner
    leave-one-language-out over its own training languages (recorded with every candidate's
    score), the epoch (or C) from validation speakers, then a refit; each evaluation fold made its choice without its held-out
    language. A choice that could only have come from test scores fails here."""
    bundle = read_bundle(default_model_path())
    final = bundle.metrics["final_model"]
    selection = final.get("selection")
    assert selection, "the bundle records no selection: its settings were fixed by hand"
    assert selection["by"] == "leave_one_language_out"
    assert selection["chosen"] == int(np.argmax(selection["scores"]))
    chosen = selection["candidates"][selection["chosen"]]
    assert chosen["layers"] == bundle.config.features.layers == final["encoder_layers"]
    assert chosen.get("normalisation", "global") == bundle.config.normalisation.mode  # the recipe's base: global
    inner = sorted(group for groups in selection["inner_test_groups"] for group in groups)
    assert inner == sorted(final["languages"])  # scored on its own training languages, each once
    assert selection["n_rows"] == final["n_train"] + final["n_validation"]
    assert final["refit"]["n_rows"] == final["n_train"] + final["n_validation"]
    lolo = {name: fold for name, fold in bundle.metrics["fold_choices"].items() if name.startswith("lolo/")}
    assert len(lolo) == len(final["languages"])
    for name, fold in lolo.items():
        held_out = fold["test_groups"]
        groups = {group for groups in fold["inner_test_groups"] for group in groups}
        assert held_out not in groups and groups == set(final["languages"]) - {held_out}, name
        assert fold["chosen"] == int(np.argmax(fold["scores"])), name
    assert "How each choice was made" in bundle.card_markdown


def test_predicts_the_example_and_emodb_clips(recogniser, shared_corpora):
    manifest = pd.read_csv(shared_corpora / "emodb" / "manifest.csv")
    paths = {Path(p).stem: shared_corpora / "emodb" / p for p in manifest["path"]}
    truth = dict(zip((Path(p).stem for p in manifest["path"]), manifest["emotion"]))
    clips = [paths[name] for name in EMODB_CLIPS]
    predictions = recogniser.predict([HELLO, *clips])
    for prediction in predictions:
        assert prediction.ok and prediction.label in EKMAN7
        assert list(prediction.probabilities) == EKMAN7
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
        # single clips: statistics that exist without other clips of the speaker
        assert prediction.norm_source in ("training statistics", "utterance")
    assert predictions[0].duration == pytest.approx(5.35, abs=0.01)
    assert [p.label for p in predictions[1:]] == [truth[name] for name in EMODB_CLIPS] == list(EMODB_CLIPS.values())
    # One clip at a time gives the batch's answer (global statistics, no groups); bf16 encoder
    # arithmetic differs a little between batch shapes.
    alone = recogniser.predict(clips[0])[0]
    assert alone.label == predictions[1].label
    np.testing.assert_allclose(list(alone.probabilities.values()), list(predictions[1].probabilities.values()), atol=2e-3)


def test_cli_predicts_the_example_offline_without_a_model_option():
    """A fresh process, as a user runs it: no --model, no network, a readable line on stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "polyemo", "predict", str(HELLO), "--format", "text", "--no-progress"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    pattern = rf"^{re.escape(str(HELLO))}: ({'|'.join(EKMAN7)}) \((\w+ \d+%, ){{2}}\w+ \d+%\)$"
    assert re.match(pattern, line), line
    assert "1 predicted, 0 failed" in result.stderr and "polyemo-default-ekman7" in result.stderr
