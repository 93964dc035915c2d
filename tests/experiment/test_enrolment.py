"""enrolled-speaker normalisation in a run: each test speaker's enrolment clips feed its
statistics and are not scored."""

import json

import numpy as np
import pandas as pd

from polyemo.train.normalise import enrolment_rows


def test_enrolment_clips_are_not_scored(tiny_experiment, tmp_path):
    from polyemo.experiment import run_experiment
    from polyemo.experiment.run import RunResult
    from polyemo.splits import Split

    config = {**tiny_experiment, "name": "tiny-enrolled", "labels": None,
              "normalisation": {"name": "enrolled-speaker", "enrol": 2}, "metrics": {"n_boot": 0}}
    run_experiment(config, tmp_path / "run", progress=False)
    result = RunResult.load(tmp_path / "run")
    manifest = pd.read_csv(tmp_path / "run" / "manifest.csv", dtype=str)
    scored = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype=str)
    seed = tiny_experiment["seed"]
    split = Split.load(tmp_path / "run" / "split")
    total_enrolled = 0
    for fold in result.folds:
        info = json.loads((tmp_path / "run" / "folds" / fold.name / "fold.json").read_text())
        test = split.frames(manifest, fold.name)["test"]
        enrolled = enrolment_rows(test["speaker"].to_numpy(dtype=object), 2, seed)
        assert info["n_enrolment"] == int(enrolled.sum()) > 0
        assert info["n_test"] == int((~enrolled).sum()) == fold.n_test
        mine = set(scored.loc[scored["fold"] == fold.name, "utt_id"])
        assert mine == set(test.loc[~enrolled, "utt_id"])  # exactly the scored clips
        total_enrolled += info["n_enrolment"]
        # k per speaker (all but one for a speaker with <= k clips)
        per_speaker = pd.Series(enrolled).groupby(test["speaker"].to_numpy()).sum()
        sizes = test.groupby("speaker").size()
        assert (per_speaker == np.minimum(2, sizes - 1).reindex(per_speaker.index)).all()
    assert len(scored) == len(manifest) - total_enrolled
    assert "enrolled-speaker" in (tmp_path / "run" / "report.md").read_text()
