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
