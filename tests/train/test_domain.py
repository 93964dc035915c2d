"""Training-side domain generalisation: per-corpus / per-speaker standardisation of the
training rows, and corpus-balanced sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from polyemo.train import SplitData
from polyemo.train.normalise import Normaliser, corpus_of, make_normaliser
from polyemo.train.trainer import EpochSampler


def _two_corpora(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(loc=5.0, scale=2.0, size=(40, 2, 3))
    b = rng.normal(loc=-1.0, scale=0.5, size=(10, 2, 3))
    x = np.concatenate([a, b]).astype(np.float32)
    utt = [f"big/{i}" for i in range(40)] + [f"small/{i}" for i in range(10)]
    speakers = [f"big/s{i % 4}" for i in range(40)] + [f"small/s{i % 2}" for i in range(10)]
    return SplitData(x, np.arange(50) % 2, speakers=np.array(speakers, dtype=object), utt_ids=np.array(utt, dtype=object))


@pytest.mark.parametrize("kind,group", [("corpus-standardised", "corpus"), ("speaker-standardised", "speaker")])
def test_training_groups_are_standardised_on_their_own_and_new_groups_get_training_statistics(kind, group, tmp_path):
    train = _two_corpora()
    normaliser = make_normaliser(kind, min_utterances=5).fit(train)
    out = normaliser.transform(train).features
    keys = corpus_of(train.utt_ids) if group == "corpus" else train.speakers
    for key in set(keys):
        rows = out[keys == key]
        np.testing.assert_allclose(rows.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(rows.std(0), 1.0, atol=1e-4)
    unseen = SplitData(train.features[:5], speakers=np.array(["new/x"] * 5, dtype=object),
                       utt_ids=np.array([f"new/{i}" for i in range(5)], dtype=object))
    glob = make_normaliser("global").fit(train)
    np.testing.assert_allclose(normaliser.transform(unseen).features, glob.transform(unseen).features, atol=1e-6)
    normaliser.save(tmp_path / "n.npz")
    again = Normaliser.load(tmp_path / "n.npz")
    np.testing.assert_allclose(again.transform(train).features, out)


def test_small_groups_fall_back_to_the_training_statistics():
    train = _two_corpora()
    normaliser = make_normaliser("corpus-standardised", min_utterances=20).fit(train)
    glob = make_normaliser("global").fit(train)
    small = train.subset(np.arange(40, 50))
    np.testing.assert_allclose(normaliser.transform(small).features, glob.transform(small).features, atol=1e-6)


@pytest.mark.parametrize("mode", ["corpus_balanced", "corpus_class_balanced"])
def test_corpus_balanced_sampling_draws_each_corpus_equally(mode):
    labels = np.array([0] * 900 + [1] * 100 + [0] * 50 + [1] * 50)
    groups = np.array(["a"] * 1000 + ["b"] * 100, dtype=object)
    sampler = EpochSampler(labels, mode, torch.Generator().manual_seed(0), groups=groups)
    drawn = torch.cat([sampler.epoch() for _ in range(5)]).numpy()
    share_b = (groups[drawn] == "b").mean()
    assert abs(share_b - 0.5) < 0.03
    if mode == "corpus_class_balanced":
        counts = Counter(zip(groups[drawn], labels[drawn]))
        assert max(counts.values()) / min(counts.values()) < 1.2
    with pytest.raises(ValueError, match="corpus"):
        EpochSampler(labels, mode, torch.Generator(), groups=None)


def _corpus_shifted(n, seed, offset_scale=3.0):
    """Two corpora; the class is in dims 0-2, the corpus in dim 3 (a large offset)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    corpus = (np.arange(n) // 3) % 2
    x = rng.normal(size=(n, 1, 5)).astype(np.float32)
    x[:, 0, :3] += 2.0 * np.eye(3, dtype=np.float32)[y]
    x[:, 0, 3] += offset_scale * corpus
    utt = np.array([f"c{c}/{seed}_{i}" for i, c in enumerate(corpus)], dtype=object)
    return SplitData(x, y, speakers=np.array([f"c{c}/s{i % 3}" for i, c in enumerate(corpus)], dtype=object),
                     utt_ids=utt)


def test_gradient_reversal_flips_the_gradient():
    from polyemo.train.domain import reverse_gradient

    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), -0.5)


def test_adversarial_training_hides_the_corpus_and_keeps_the_emotion(quick_config, tmp_path):
    from polyemo.heads.model import HeadConfig
    from polyemo.train import build_estimator, load_estimator
    from polyemo.train.domain import DomainAdversarialTrainer

    train, val = _corpus_shifted(300, 0), _corpus_shifted(90, 1)
    names = ["a", "b", "c"]
    plain = build_estimator(HeadConfig(name="linear"), quick_config(epochs=20, normalisation="global"), 3, names)
    adv = build_estimator(HeadConfig(name="linear"), quick_config(epochs=20, normalisation="global", adversarial=1.0),
                          3, names)
    assert isinstance(adv, DomainAdversarialTrainer) and not isinstance(plain, DomainAdversarialTrainer)
    plain.fit(train, val)
    adv.fit(train, val)
    assert adv.domains == ["c0", "c1"]
    assert (adv.predict(val).predictions == val.labels).mean() > 0.8
    # the corpus is far harder to read from the adversarial representation than from the input
    from sklearn.linear_model import LogisticRegression

    corpus = np.array([u.split("/")[0] for u in val.utt_ids])
    x = torch.as_tensor(np.asarray(adv._prepare(val).features))
    with torch.no_grad():
        h = adv.model.project(adv.model.inner.layers(x)).numpy()
    before = x[:, 0].numpy()
    probe = lambda f: LogisticRegression(max_iter=500).fit(f[:45], corpus[:45]).score(f[45:], corpus[45:])
    assert probe(before) > 0.8
    assert probe(h) < probe(before) - 0.1, (probe(h), probe(before))
    # saved and loaded, it predicts the same without any corpus given
    adv.save(tmp_path / "adv")
    again = load_estimator(tmp_path / "adv")
    unseen = SplitData(val.features)
    np.testing.assert_allclose(again.predict(unseen).probabilities, adv.predict(val).probabilities, atol=1e-6)
