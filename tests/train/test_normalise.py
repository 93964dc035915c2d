import numpy as np
import pytest

from polyemo.train import SplitData
from polyemo.train.normalise import Normaliser, make_normaliser


def _pooled():
    # speaker "a": values 1, 3 (mean 2, std 1); speaker "b": 10, 20, 30 (mean 20, std 8.165)
    x = np.array([1.0, 3.0, 10.0, 20.0, 30.0], dtype=np.float32).reshape(5, 1, 1)
    return SplitData(x, np.array([0, 1, 0, 1, 0]), speakers=np.array(["a", "a", "b", "b", "b"], dtype=object))


def test_speaker_normalisation_by_hand():
    data = _pooled()
    norm = make_normaliser("speaker", min_utterances=2).fit(data)
    out = norm.transform(data).features[:, 0, 0]
    s = np.sqrt(200 / 3)  # population std of 10, 20, 30
    np.testing.assert_allclose(out, [-1, 1, -10 / s, 0, 10 / s], rtol=1e-6)


def test_speaker_stats_come_from_the_transformed_split_and_small_speakers_fall_back():
    train = _pooled()
    norm = make_normaliser("speaker", min_utterances=2).fit(train)  # global mean 12.8
    test = SplitData(np.array([5.0, 7.0, 100.0, 4.0], dtype=np.float32).reshape(4, 1, 1), None,
                     speakers=np.array(["c", "c", "d", None], dtype=object))
    out = norm.transform(test).features[:, 0, 0]
    g_mean, g_std = 12.8, np.std([1, 3, 10, 20, 30])
    # "c" from its own two test utterances (no labels needed); "d" and unknown fall back to global train stats
    np.testing.assert_allclose(out, [-1, 1, (100 - g_mean) / g_std, (4 - g_mean) / g_std], rtol=1e-6)


def test_speaker_normalisation_of_frames_uses_all_their_frames():
    f1 = np.array([[[0.0], [2.0]]], dtype=np.float32)  # (L=1, T=2, D=1)
    f2 = np.array([[[4.0], [6.0], [8.0]]], dtype=np.float32)
    data = SplitData([f1, f2], np.array([0, 1]), speakers=np.array(["a", "a"], dtype=object))
    out = make_normaliser("speaker", min_utterances=1).fit(data).transform(data)
    frames = np.concatenate([f.ravel() for f in out.features])
    expected = (np.array([0, 2, 4, 6, 8]) - 4) / np.sqrt(8)  # mean 4, population var 8
    np.testing.assert_allclose(frames, expected, rtol=1e-6)


def test_global_normalisation_is_fitted_on_training_only():
    train = SplitData(np.array([[1.0, 0.0], [3.0, 0.0]], dtype=np.float32), np.array([0, 1]))
    val = SplitData(np.array([[5.0, 2.0]], dtype=np.float32), np.array([0]))
    norm = make_normaliser("global").fit(train)
    # mean (2, 0), std (1, 0 -> 1: constant dimensions keep scale 1)
    np.testing.assert_allclose(norm.transform(val).features[0, 0], [3.0, 2.0])


def test_utterance_normalisation_over_frames_and_features():
    f = np.array([[[1.0, 10.0], [3.0, 30.0]]], dtype=np.float32)  # one layer, two frames
    data = SplitData([f], np.array([0]))
    over_frames = make_normaliser("utterance", axis="frames").transform(data).features[0][0]
    np.testing.assert_allclose(over_frames, [[-1, -1], [1, 1]], rtol=1e-6)
    over_features = make_normaliser("utterance", axis="features").transform(data).features[0][0]
    np.testing.assert_allclose(over_features, [[-1, 1], [-1, 1]], rtol=1e-6)
    pooled = SplitData(np.array([[2.0, 4.0, 6.0]], dtype=np.float32), np.array([0]))
    with pytest.raises(ValueError, match="frame-level"):
        make_normaliser("utterance", axis="frames").transform(pooled)
    out = make_normaliser("utterance", axis="features").transform(pooled).features[0, 0]
    np.testing.assert_allclose(out, np.array([-1, 0, 1]) * np.sqrt(1.5), rtol=1e-6)


@pytest.mark.parametrize("kind,options", [("global", {}), ("speaker", {"min_utterances": 2}),
                                          ("utterance", {"axis": "features"})])
def test_statistics_save_and_load(tmp_path, kind, options):
    data = _pooled()
    norm = make_normaliser(kind, **options).fit(data)
    expected = norm.transform(data).features
    norm.save(tmp_path / "stats.npz")
    loaded = Normaliser.load(tmp_path / "stats.npz")
    assert type(loaded) is type(norm)
    single = SplitData(data.features[:1], None, speakers=np.array(["a"], dtype=object))
    # one utterance of an enrolled speaker: the saved per-speaker statistics apply
    np.testing.assert_allclose(loaded.transform(single).features, expected[:1], rtol=1e-6)


def test_bad_statistics_file_is_named(tmp_path):
    bad = tmp_path / "stats.npz"
    bad.write_text("not numpy")
    with pytest.raises(ValueError, match="stats.npz"):
        Normaliser.load(bad)
    assert make_normaliser("none") is None
    with pytest.raises(RuntimeError, match="not fitted"):
        make_normaliser("global").transform(_pooled())


# --- names and enrolled-speaker normalisation ---------------------------------------------------

def test_names_resolve_and_describe_their_statistics():
    from polyemo.train.config import TrainConfig
    from polyemo.train.normalise import describe_normalisation, resolve_normalisation

    assert resolve_normalisation("speaker") == "test-speaker"
    assert make_normaliser("speaker", min_utterances=2).kind == "test-speaker"
    assert TrainConfig(normalisation="speaker").normalisation == "test-speaker"
    assert describe_normalisation("speaker").startswith("test-speaker (transductive, unlabelled")
    assert "3 enrolment clips per speaker, excluded from scoring" in describe_normalisation("enrolled-speaker", 3)
    for name in ("none", "global", "utterance", "test-speaker", "enrolled-speaker"):
        assert describe_normalisation(name).startswith(f"{name} (")
    with pytest.raises(ValueError, match="unknown normalisation"):
        resolve_normalisation("per-speaker")
    options = TrainConfig(normalisation="enrolled-speaker", enrol_clips=3, seed=7).normaliser_options()
    assert options == {"enrol": 3, "seed": 7}


def test_enrolment_rows_k_per_speaker_reproducible_and_leave_one_to_score():
    from polyemo.train.normalise import enrolment_rows

    speakers = np.array(["a"] * 10 + ["b"] * 3 + ["c"] + [None] * 4 + ["d"] * 6, dtype=object)
    rng = np.random.default_rng(0)
    mask = enrolment_rows(speakers, 5, seed=1)
    counts = {s: int(mask[speakers == s].sum()) for s in ("a", "b", "c", "d")}
    assert counts == {"a": 5, "b": 2, "c": 0, "d": 5}  # b: all but one; c: its only clip is scored
    assert not mask[14:18].any()  # unknown speakers enrol nothing
    np.testing.assert_array_equal(enrolment_rows(speakers, 5, seed=1), mask)  # reproducible
    assert not np.array_equal(enrolment_rows(speakers, 5, seed=2), mask)  # the seed draws
    # a speaker's choice does not depend on the other speakers present
    alone = enrolment_rows(speakers[:10], 5, seed=1)
    np.testing.assert_array_equal(alone, mask[:10])
    shuffled = rng.permutation(len(speakers))  # ...only on the order of its own rows
    assert enrolment_rows(speakers[shuffled], 5, seed=1).sum() == mask.sum()


def test_enrolled_speaker_statistics_come_from_the_enrolment_clips():
    from polyemo.train.normalise import EnrolledSpeakerNormaliser, enrolment_rows

    rng = np.random.default_rng(3)
    speakers = np.array(["a"] * 8 + ["b"] * 6 + ["c"], dtype=object)
    x = (rng.normal(size=(15, 2, 3)) * 4 + 10).astype(np.float32)
    data = SplitData(x, np.arange(15) % 3, speakers=speakers)
    train = SplitData((rng.normal(size=(30, 2, 3)) + 1).astype(np.float32), np.arange(30) % 3)
    norm = make_normaliser("enrolled-speaker", enrol=3, seed=5).fit(train)
    assert isinstance(norm, EnrolledSpeakerNormaliser)
    out = norm.transform(data).features
    enrol = enrolment_rows(speakers, 3, seed=5)
    np.testing.assert_array_equal(norm.enrolment(data), enrol)
    for speaker in ("a", "b"):
        rows = speakers == speaker
        picked = x[rows & enrol].astype(np.float64)
        assert len(picked) == 3
        expected = (x[rows] - picked.mean(0)) / picked.std(0)
        np.testing.assert_allclose(out[rows], expected, rtol=1e-5, atol=1e-5)
        # not all of the speaker's clips (that would be test-speaker normalisation)
        everything = (x[rows] - x[rows].mean(0)) / x[rows].std(0)
        assert np.abs(out[rows] - everything).max() > 1e-3
    # "c" has one clip, nothing to enrol: the training statistics
    t = train.features.astype(np.float64)
    np.testing.assert_allclose(out[speakers == "c"], (x[speakers == "c"] - t.mean(0)) / t.std(0), rtol=1e-5)
    # explicit enrolment rows from elsewhere
    other = SplitData(x[:4] * 0 + np.arange(4, dtype=np.float32)[:, None, None], speakers=np.array(["a"] * 4, dtype=object))
    moved = norm.transform(data, enrol=other).features
    np.testing.assert_allclose(moved[:8], (x[:8] - 1.5) / np.sqrt(1.25), rtol=1e-5)
    np.testing.assert_allclose(moved[8:], (x[8:] - t.mean(0)) / t.std(0), rtol=1e-5)  # b, c: not enrolled there


def test_enrolled_speaker_on_frames():
    from polyemo.train.normalise import enrolment_rows

    rng = np.random.default_rng(4)
    frames = [rng.normal(size=(1, int(rng.integers(2, 6)), 2)).astype(np.float32) + i for i in range(6)]
    speakers = np.array(["a"] * 6, dtype=object)
    data = SplitData(frames, np.zeros(6, int), speakers=speakers)
    norm = make_normaliser("enrolled-speaker", enrol=2, seed=0).fit(data)
    out = norm.transform(data).features
    picked = np.concatenate([frames[i] for i in np.flatnonzero(enrolment_rows(speakers, 2, 0))], axis=1)
    np.testing.assert_allclose(out[0], (frames[0] - picked.mean(1, keepdims=True)) / picked.std(1, keepdims=True),
                               rtol=1e-5, atol=1e-5)


def test_enrolled_speaker_saves_and_loads(tmp_path):
    data = _pooled()
    norm = make_normaliser("enrolled-speaker", enrol=1, seed=3).fit(data)
    norm.save(tmp_path / "stats.npz")
    loaded = Normaliser.load(tmp_path / "stats.npz")
    assert (loaded.kind, loaded.enrol, loaded.seed) == ("enrolled-speaker", 1, 3)
    np.testing.assert_array_equal(loaded.transform(data).features, norm.transform(data).features)
