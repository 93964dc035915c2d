from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from polyemo.heads import HeadConfig
from polyemo.train import (
    FitReceipt,
    SealedSplit,
    SealedSplitError,
    SplitData,
    train_and_evaluate,
)


class TripwireFrames(Sequence):
    """Frame features that log every read, once armed."""

    def __init__(self, frames, events):
        self.frames, self.events, self.armed = frames, events, False

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        if self.armed:
            self.events.append("test read")
        return self.frames[i]


def test_sealed_split_opens_once_and_only_with_a_receipt(make_pooled):
    sealed = SealedSplit(make_pooled(6, 0))
    with pytest.raises(SealedSplitError, match="sealed"):
        sealed.open(None)
    data = sealed.open(FitReceipt(finished_at=0.0, best_epoch=1))
    assert len(data) == 6 and sealed.opened
    with pytest.raises(SealedSplitError, match="once"):
        sealed.open(FitReceipt(finished_at=0.0, best_epoch=1))
    assert [outcome for _, outcome in sealed.access_log] == ["refused: no fit receipt", "opened", "refused: already opened"]
    assert "SplitData" not in repr(sealed)


@pytest.mark.parametrize("normalisation", ["none", "speaker"])
def test_test_features_are_never_read_before_training_ends(make_frames, quick_config, normalisation):
    events: list[str] = []
    test = make_frames(12, 2)
    tripwire = TripwireFrames(test.features, events)
    test = SplitData(tripwire, test.labels, speakers=test.speakers)
    tripwire.armed = True

    def record(event, info):
        events.append(event)

    result = train_and_evaluate(make_frames(24, 0), make_frames(12, 1), test,
                                HeadConfig(name="frame_mlp", params={"hidden_dim": 8}),
                                quick_config(epochs=3, normalisation=normalisation, speaker_min_utterances=2),
                                callbacks=[record])
    first_read = events.index("test read")
    assert events[:first_read] == ["epoch_end"] * 3 + ["fit_end"]
    assert result.probabilities.shape == (12, 3)


def test_split_data_from_a_manifest():
    manifest = pd.DataFrame({
        "utt_id": ["x/1", "x/2", "y/1", "y/2"], "corpus": ["x", "x", "y", "y"],
        "speaker": ["x/a", "x/b", "y/c", None], "gender": ["f", "m", None, "m"],
        "label": ["anger", "sadness", "happiness", None],
        "arousal": [0.1, np.nan, 0.5, 0.2], "valence": [0.0, 0.1, 0.2, 0.3], "dominance": [1.0, 2.0, 3.0, 4.0],
    })
    data = SplitData.from_manifest(manifest, np.zeros((4, 2, 3), dtype=np.float32), "big4")
    # big4 classes: anger, happiness, neutral, sadness
    assert data.labels.tolist() == [0, 3, 1, -1]
    assert data.masks.tolist() == [[True, False, False, True]] * 2 + [[False, True, False, False]] * 2
    assert data.gender.tolist() == [0, 1, -1, 1]
    assert np.isnan(data.avd[1, 0]) and data.avd[3, 2] == 4.0
    assert data.speakers[3] is None and data.num_layers == 2 and data.feature_dim == 3


def test_split_data_checks_shapes():
    with pytest.raises(ValueError, match="labels has 2 rows"):
        SplitData(np.zeros((3, 1, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="disagree"):
        SplitData([np.zeros((1, 3, 2)), np.zeros((1, 3, 4))])
    with pytest.raises(ValueError, match="frames>=1"):
        SplitData([np.zeros((1, 0, 2))])
    assert SplitData(np.zeros((3, 4))).num_layers == 1
