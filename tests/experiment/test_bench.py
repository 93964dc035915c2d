"""A small grid on real corpora: cells, leaderboard, heatmap, failures recorded, resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from polyemo.experiment import bench as bench_module
from polyemo.experiment import run_bench


class SimulatedKill(BaseException):
    """Stops a bench the way Ctrl-C or a killed process would (not an ordinary cell error)."""


@pytest.fixture
def grid(shared_corpora, feature_cache) -> dict:
    return {
        "name": "tiny-bench",
        "base": {
            "corpora_root": str(shared_corpora), "labels": "big4", "head": "logreg",
            "encoder": {"name": "egemaps", "cache_dir": str(feature_cache)},
            "limit": {"per_corpus": 24}, "metrics": {"n_boot": 20},
        },
        "parts": [
            {"name": "in", "set": {"protocol": {"name": "speaker_kfold", "params": {"k": 2}}},
             "axes": {"corpora": ["emodb", "savee"]}},
            {"name": "cross", "set": {"corpora": ["emodb", "savee"], "protocol": "cross_corpus"}},
            # EmoDB has no official split: this cell fails at run time; the others go on.
            {"name": "broken", "set": {"corpora": ["emodb"], "protocol": "official"}},
        ],
    }


def test_bench_resumes_and_writes_leaderboard_and_heatmap(grid, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    real_run = bench_module.run_experiment
    calls: list[str] = []

    def killed_at_second_cell(config, out_dir, **kwargs):
        calls.append(out_dir.name)
        if len(calls) == 2:
            raise SimulatedKill
        return real_run(config, out_dir, **kwargs)

    monkeypatch.setattr(bench_module, "run_experiment", killed_at_second_cell)
    with pytest.raises(SimulatedKill):
        run_bench(grid, out, progress=False)
    assert (out / "cells" / "in__emodb" / "result.json").is_file()
    board = pd.read_csv(out / "leaderboard.csv")  # written after each finished cell
    assert dict(zip(board["cell"], board["status"]))["in__emodb"] == "ok"

    def counting(config, out_dir, **kwargs):
        calls.append(out_dir.name)
        return real_run(config, out_dir, **kwargs)

    calls.clear()
    monkeypatch.setattr(bench_module, "run_experiment", counting)
    result = run_bench(grid, out, progress=False)
    assert calls == ["in__savee", "cross", "broken"]  # the finished cell was not run again
    assert set(result.results) == {"in__emodb", "in__savee", "cross"}
    assert "official" in result.errors["broken"] and (out / "cells" / "broken" / "error.txt").is_file()

    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["rank"]) == [1, 2, 3, 4]
    finished = board[board["status"] == "ok"]
    assert list(finished["ua_mean"]) == sorted(finished["ua_mean"], reverse=True)
    assert board.iloc[-1]["cell"] == "broken" and board.iloc[-1]["status"].startswith("error: ExperimentError")
    for column in ("ua_pooled", "ua_ci_low", "ua_ci_high", "macro_f1_pooled", "n_folds"):
        assert finished[column].notna().all()
    markdown = (out / "leaderboard.md").read_text()
    assert "| rank | cell | part | corpora |" in markdown and "in__savee" in markdown

    assert result.heatmaps == [out / "cross_corpus.png"]
    table = pd.read_csv(out / "cross_corpus.csv").set_index("train")
    cross = result.results["cross"]
    pairs = {(f.info["train_corpora"][0], f.info["test_corpus"]): f.ua for f in cross.folds}
    assert set(pairs) == {("emodb", "savee"), ("savee", "emodb")}
    assert table.loc["emodb", "savee"] == pytest.approx(pairs[("emodb", "savee")])
    # The diagonal is the in-domain result of the same model (pooled UA).
    assert table.loc["savee", "savee"] == pytest.approx(result.results["in__savee"].pooled["ua"])
    summary = json.loads((out / "bench.json").read_text())
    assert summary["finished"] == 3 and summary["cells"] == 4

    calls.clear()
    again = run_bench(grid, out, progress=False)
    assert calls == ["broken"]  # only the failed cell is tried again
    assert again.results["cross"] == cross
