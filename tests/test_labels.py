import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from polyemo.labels import (
    CANONICAL,
    NAMED_SETS,
    LabelSet,
    UnknownLabelError,
    class_masks,
    decode_indices,
    encode,
    label_set,
    normalise,
    row_masks,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Angry", "anger"), (" ANG ", "anger"), ("rabbia", "anger"), ("colère", "anger"),
        ("ps", "surprise"), ("Pleasant-Surprise", "surprise"), ("pleasant surprise", "surprise"),
        ("fearful", "fear"), ("paura", "fear"), ("disgusto", "disgust"), ("neutre", "neutral"),
        ("exc", "happiness"), ("joy", "happiness"), ("xxx", "other"), ("fru", "other"),
        ("calm", "calm"), ("boredom", "boredom"), ("contempt", "contempt"),
    ],
)
def test_normalise(raw, canonical):
    assert normalise(raw) == canonical


def test_every_canonical_name_normalises_to_itself():
    assert [normalise(c) for c in CANONICAL] == list(CANONICAL)


def test_unknown_label_is_an_error_naming_it():
    with pytest.raises(UnknownLabelError, match="'confused'"):
        normalise("confused")


def test_named_sets():
    assert NAMED_SETS["ekman7"].classes == ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert "disgust" not in NAMED_SETS["poleval6"].classes and len(NAMED_SETS["poleval6"].classes) == 6
    assert NAMED_SETS["big4"].classes == ["anger", "happiness", "neutral", "sadness"]
    assert NAMED_SETS["all"].classes == list(CANONICAL)
    with pytest.raises(KeyError, match="ekman6"):
        label_set("ekman6")
    copy = label_set("big4")
    copy.classes.append("fear")
    assert "fear" not in NAMED_SETS["big4"].classes  # named sets are handed out as copies


def test_merges_and_drops():
    labels = label_set({"base": "big4", "merges": {"calm": "neutral", "excited": "happy"}, "drops": ["other"]})
    assert labels.merges == {"calm": "neutral", "happiness": "happiness"}
    assert labels.map("calm") == "neutral" and labels.map("Angry") == "anger"
    assert labels.map("fear") is None and labels.map("other") is None and labels.map(None) is None
    assert labels.map(float("nan")) is None
    assert labels.sources("neutral") == ["neutral", "calm"]
    dropping = LabelSet(classes=["anger", "neutral"], merges={"calm": "neutral"}, drops=["calm"])
    assert dropping.map("calm") is None  # a drop wins over a merge
    assert dropping.sources("neutral") == ["neutral"]


def test_invalid_sets_are_rejected():
    with pytest.raises(ValidationError, match="repeats a class"):
        LabelSet(classes=["anger", "angry"])
    with pytest.raises(ValidationError, match="targets no class"):
        LabelSet(classes=["anger"], merges={"calm": "neutral"})
    with pytest.raises(ValidationError, match="unknown emotion label"):
        LabelSet(classes=["anger", "confusion"])


def test_class_masks_real_corpora(prepared_manifest):
    manifest = pd.concat([prepared_manifest("emodb"), prepared_manifest("savee"), prepared_manifest("baved")], ignore_index=True)
    ekman7 = label_set("ekman7")
    masks = class_masks(manifest, ekman7)
    surprise = ekman7.index("surprise")
    assert not masks["emodb"][surprise]  # EmoDB has no surprise: never a negative for it
    assert masks["emodb"].sum() == 6  # boredom is not an ekman7 class
    assert masks["savee"].all()
    assert not masks["baved"].any()  # arousal levels only
    rows = row_masks(manifest, ekman7)
    assert rows.shape == (len(manifest), 7)
    is_emodb = (manifest["corpus"] == "emodb").to_numpy()
    assert not rows[is_emodb, surprise].any() and rows[~is_emodb & (manifest["corpus"] == "savee").to_numpy()].all()
    assert row_masks(manifest.iloc[:0], ekman7).shape == (0, 7)


def test_encode_and_decode():
    labels = label_set({"base": "big4", "merges": {"calm": "neutral"}})
    codes = encode(labels, ["anger", "calm", "fear", None, pd.NA, "sadness"])
    assert codes.tolist() == [0, 2, -1, -1, -1, 3] and codes.dtype == np.int64
    assert decode_indices(labels, [3, 0]) == ["sadness", "anger"]


# --- native label sets ------------------------------------------------------------------------

NATIVE = {
    "emodb": ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"],
    "ravdess": ["anger", "calm", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"],
    "savee": ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"],
    "emovo": ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"],
    "urdu": ["anger", "happiness", "neutral", "sadness"],
}


def test_native_classes_of_the_shared_corpora(shared_corpora):
    """Each corpus' own classes after synonym normalisation, read from the shared manifests."""
    from polyemo.labels import native_classes, native_label_set

    frames = [pd.read_csv(shared_corpora / c / "manifest.csv", dtype=str) for c in NATIVE]
    manifest = pd.concat(frames, ignore_index=True)
    assert native_classes(manifest, column="emotion") == NATIVE
    union = native_label_set(manifest, column="emotion")
    assert union.name == "native" and union.classes == [
        "anger", "boredom", "calm", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    # per-corpus masks over the union: a corpus only knows its own classes
    masks = class_masks(manifest.assign(label=manifest["emotion"]), union)
    assert [c for c, m in zip(union.classes, masks["urdu"]) if m] == NATIVE["urdu"]
    assert [c for c, m in zip(union.classes, masks["emodb"]) if m] == NATIVE["emodb"]


def test_native_is_a_named_set_without_merges():
    native = label_set("native")
    assert "other" not in native.classes and "calm" in native.classes and "boredom" in native.classes
    assert native.map("calm") == "calm" and native.map("bored") == "boredom" and native.map("xxx") is None


def test_native_is_the_default_of_in_corpus_protocols():
    from polyemo.experiment.config import experiment_from_dict

    for protocol, expected in (("loso", "native"), ("speaker_kfold", "native"), ("emobox_rule", "native"),
                               ("official", "native"), ("cross_corpus", "all"), ("leave_one_language_out", "all")):
        config = experiment_from_dict({"corpora": ["emodb"], "protocol": protocol})
        assert config.label_set().name == expected, protocol
    explicit = experiment_from_dict({"corpora": ["emodb"], "protocol": "loso", "labels": "ekman7"})
    assert explicit.label_set().name == "ekman7"


def test_classes_of_a_native_experiment_are_the_data_classes(shared_corpora):
    """EmoDB LOSO without a label set: 7 native classes, boredom kept (535 rows, none dropped)."""
    from polyemo.experiment.config import experiment_from_dict
    from polyemo.experiment.data import add_target, classes_of

    config = experiment_from_dict({"corpora": ["emodb"], "protocol": "loso"})
    manifest = pd.read_csv(shared_corpora / "emodb" / "manifest.csv", dtype=str)
    manifest = manifest.assign(label=manifest["emotion"])
    labelled = add_target(config, manifest)
    assert len(labelled) == len(manifest) == 535
    assert classes_of(config, labelled) == NATIVE["emodb"]
