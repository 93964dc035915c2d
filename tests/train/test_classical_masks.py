"""Class masks through the classical estimator: logreg honours them, SVMs refuse them by name."""

import numpy as np
import pytest

from polyemo.heads import HeadConfig
from polyemo.train import SplitData, TrainConfig, build_estimator
from polyemo.train.data import DataError

CLASSES = ["anger", "happiness", "sadness", "surprise"]


def _two_corpora(seed=0):
    """'big' has all four classes; 'urdu' (no surprise) and 'emodb' (no sadness, no surprise) fewer."""
    rng = np.random.default_rng(seed)
    rows = []
    for corpus, classes, n in (("big", [0, 1, 2, 3], 80), ("urdu", [0, 1, 2], 60), ("emodb", [0, 1], 40)):
        y = np.asarray(classes)[np.arange(n) % len(classes)]
        x = np.eye(4)[y] * 3 + rng.normal(size=(n, 4))
        mask = np.isin(np.arange(4), classes)
        rows.append((x, y, np.tile(mask, (n, 1)), [f"{corpus}/{i}" for i in range(n)]))
    x, y, masks, ids = (np.concatenate([r[i] for r in rows]) for i in range(4))
    return SplitData(x[:, None, :].astype(np.float32), y, masks=masks, utt_ids=ids)


@pytest.mark.parametrize("name", ["svm_linear", "svm_rbf"])
def test_svm_refuses_corpora_that_lack_classes_and_names_them(name):
    data = _two_corpora()
    estimator = build_estimator(HeadConfig(name=name), TrainConfig(show_progress=False), 4, CLASSES)
    with pytest.raises(DataError) as error:
        estimator.fit(data, data)
    message = str(error.value)
    assert "emodb lacks sadness, surprise" in message and "urdu lacks surprise" in message
    assert "big" not in message.split("(")[1]
    # one corpus (or corpora that all have every class): allowed
    one = data.subset(np.arange(80))
    build_estimator(HeadConfig(name=name), TrainConfig(show_progress=False), 4, CLASSES).fit(one, one)


def test_logreg_estimator_passes_masks_to_the_head():
    data = _two_corpora(1)
    probe = data.subset(np.flatnonzero(data.labels == 3))
    config = TrainConfig(show_progress=False)
    masked = build_estimator(HeadConfig(name="logreg"), config, 4, CLASSES)
    masked.fit(data, data)
    unmasked_data = SplitData(data.features, data.labels, utt_ids=data.utt_ids)
    unmasked = build_estimator(HeadConfig(name="logreg"), config, 4, CLASSES)
    unmasked.fit(unmasked_data, unmasked_data)
    assert masked.predict_proba(probe)[:, 3].mean() > unmasked.predict_proba(probe)[:, 3].mean() + 0.02
