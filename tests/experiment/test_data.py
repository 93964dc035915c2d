"""The experiment's rows: targets under a label set or arousal levels, and balanced limits."""

from __future__ import annotations

import pandas as pd

from polyemo.experiment import load_experiment
from polyemo.experiment.config import LimitSpec
from polyemo.experiment.data import add_target, apply_limit, classes_of


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"utt_id": f"u{i}", "corpus": c, "speaker": s, "target": t} for i, (c, s, t) in enumerate(rows)])


def test_limit_spreads_over_classes_and_speakers():
    # Speaker a has most rows; a prefix taken in file order would be all "a" and all "anger".
    rows = [("x", "a", "anger")] * 20 + [("x", "a", "sadness")] * 5 + [("x", "b", "sadness"), ("x", "c", "anger"),
                                                                         ("x", "c", "neutral"), ("x", "d", "neutral")]
    data = frame(rows)
    kept = apply_limit(data, LimitSpec(per_corpus=6), seed=0)
    assert len(kept) == 6
    assert kept["target"].value_counts().to_dict() == {"anger": 2, "sadness": 2, "neutral": 2}
    assert set(kept["speaker"]) == {"a", "b", "c", "d"}
    assert kept.equals(apply_limit(data, LimitSpec(per_corpus=6), seed=0))  # deterministic
    capped = apply_limit(data, LimitSpec(per_speaker=2), seed=1)
    assert capped["speaker"].value_counts().max() == 2 and len(capped) == 2 + 1 + 2 + 1
    assert set(capped.loc[capped["speaker"] == "a", "target"]) == {"anger", "sadness"}
    assert apply_limit(data, LimitSpec(), seed=0) is data


def test_targets_follow_the_label_set(tmp_path):
    manifest = pd.DataFrame({"label": ["anger", "calm", "boredom", None, "surprise"],
                             "arousal_level": [None, None, "low", "high", None]})
    config = load_experiment({"corpora": ["emodb"], "corpora_root": str(tmp_path),
                              "labels": {"base": "big4", "merges": {"calm": "neutral"}}})
    labelled = add_target(config, manifest)
    assert labelled["target"].tolist() == ["anger", "neutral"]
    assert classes_of(config, labelled) == ["anger", "neutral"]
    arousal = load_experiment({"corpora": ["baved"], "corpora_root": str(tmp_path), "target": "arousal_level"})
    levels = add_target(arousal, manifest)
    assert levels["target"].tolist() == ["low", "high"] and classes_of(arousal, levels) == ["low", "high"]
