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
    for column in ("ua_pooled", "ua_pooled_low", "ua_pooled_high", "ua_mean_low", "ua_mean_high", "macro_f1_pooled",
                   "n_folds", "classes", "paired"):
        assert finished[column].notna().all(), column
    assert (finished["ua_mean_low"] <= finished["ua_mean"]).all() and (finished["ua_mean"] <= finished["ua_mean_high"]).all()
    assert finished.iloc[0]["paired"] == "best (reference)" and finished.iloc[0]["ua_diff_vs_best"] == 0
    # each cell was scored on other test utterances: none can be paired with the best
    assert set(finished.iloc[1:]["paired"]) == {"not paired (different test sets)"}
    assert all(c.startswith("4 classes: ") or c.startswith("3 classes: ") for c in finished["classes"])
    markdown = (out / "leaderboard.md").read_text()
    assert "| rank | cell | part | corpora |" in markdown and "in__savee" in markdown
    assert "(ranked on test; not used to choose any setting)" in markdown.splitlines()[0]

    assert result.heatmaps == [out / "cross_corpus.png"]
    table = pd.read_csv(out / "cross_corpus.csv").set_index("train")
    cross = result.results["cross"]
    pairs = {(f.info["train_corpora"][0], f.info["test_corpus"]): f.ua for f in cross.folds}
    assert set(pairs) == {("emodb", "savee"), ("savee", "emodb")}
    assert table.loc["emodb", "savee"] == pytest.approx(pairs[("emodb", "savee")])
    # The diagonal is the in-domain result of the same model (pooled UA).
    assert table.loc["savee", "savee"] == pytest.approx(result.results["in__savee"].pooled["ua"])
    intervals = pd.read_csv(out / "cross_corpus_cells.csv")
    assert len(intervals) == 4 and (intervals["ua_low"] <= intervals["ua"]).all() and (intervals["ua"] <= intervals["ua_high"]).all()
    assert intervals["interval"].nunique() == 1  # one method for every cell, diagonal included
    summary = json.loads((out / "bench.json").read_text())
    assert summary["finished"] == 3 and summary["cells"] == 4

    calls.clear()
    again = run_bench(grid, out, progress=False)
    assert calls == ["broken"]  # only the failed cell is tried again
    assert again.results["cross"] == cross


# --- synthetic benches: how cells are scored, paired and put on the heatmap ---------------------------

from polyemo.experiment.bench import cross_corpus_heatmaps, leaderboard_markdown, leaderboard_rows, load_bench  # noqa: E402
from polyemo.experiment.run import FoldSummary, RunResult  # noqa: E402
from polyemo.metrics import FoldPredictions, aggregate_folds, evaluate_classification  # noqa: E402

CLASSES = ["anger", "happiness", "neutral", "sadness"]


def _frame(corpus: str, folds: dict[str, int], accuracy: float, seed: int, speakers_per_fold: int = 3,
           prefix: str = "") -> pd.DataFrame:
    """Test predictions of folds of different sizes; utt_ids depend on corpus and index only."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows, start = [], 0
    for fold, n in folds.items():
        truth = np.random.default_rng([seed % 7, start]).integers(0, len(CLASSES), n)
        hit = rng.random(n) < accuracy
        pred = np.where(hit, truth, (truth + 1) % len(CLASSES))
        for i in range(n):
            rows.append({"utt_id": f"{prefix}{corpus}_{start + i:04d}", "corpus": corpus, "language": "xx",
                         "speaker": f"{corpus}_{fold}_s{i % speakers_per_fold}",
                         "fold": fold, "true": CLASSES[truth[i]], "pred": CLASSES[pred[i]]})
        start += n
    return pd.DataFrame(rows)


def _result(cell_id: str, frame: pd.DataFrame, out, infos: dict[str, dict] | None = None) -> RunResult:
    names = sorted(frame["fold"].unique())
    folds = [FoldPredictions(y_true=frame[frame.fold == n]["true"].tolist(), y_pred=frame[frame.fold == n]["pred"].tolist(),
                             name=n, groups=frame[frame.fold == n]["speaker"].tolist()) for n in names]
    agg = aggregate_folds(folds, CLASSES, n_boot=200)
    cell_dir = out / "cells" / cell_id
    cell_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(cell_dir / "predictions.csv", index=False)
    summaries = [FoldSummary(name=n, n_train=1, n_validation=1, n_test=m.n, ua=m.ua, wa=m.wa, macro_f1=m.macro_f1,
                             classes=CLASSES, info=(infos or {}).get(n, {})) for n, m in zip(names, agg.folds)]
    return RunResult(
        name=cell_id, out_dir=str(cell_dir), fingerprint="x", protocol="p", encoder="egemaps", head="logreg",
        classes=CLASSES, primary_metric="ua", primary=agg.mean_of_folds["ua"].mean, primary_std=agg.mean_of_folds["ua"].std,
        pooled=agg.pooled.summary(), pooled_ci={k: [c.low, c.high] for k, c in agg.pooled.ci.items()},
        mean_of_folds={k: s.mean for k, s in agg.mean_of_folds.items()},
        mean_of_folds_ci={k: [s.ci.low, s.ci.high] for k, s in agg.mean_of_folds.items()},
        n_utterances=len(frame), n_folds=len(names), folds=summaries, scored_classes=agg.pooled.evaluated_classes,
    )


def _cells(grid: dict):
    return load_bench(grid)[1]


def test_heatmap_scores_diagonal_and_off_diagonal_cells_the_same_way(tmp_path):
    cells = _cells({
        "name": "syn", "base": {"head": "logreg", "encoder": {"name": "egemaps"}, "labels": "big4", "metrics": {"n_boot": 300}},
        "parts": [{"name": "in", "set": {"protocol": "loso"}, "axes": {"corpora": ["emodb", "savee"]}},
                  {"name": "cross", "set": {"corpora": ["emodb", "savee"], "protocol": "cross_corpus"}}]})
    # in-domain folds of very different sizes and accuracies: pooled UA is not the mean of folds
    in_emodb = _frame("emodb", {"e1": 12, "e2": 60, "e3": 30}, 0.8, seed=1)
    in_emodb.loc[in_emodb.fold == "e1", "pred"] = in_emodb.loc[in_emodb.fold == "e1", "true"]
    in_savee = _frame("savee", {"s1": 80, "s2": 16}, 0.5, seed=2)
    cross = pd.concat([_frame("savee", {"emodb_to_savee": 96}, 0.4, seed=3), _frame("emodb", {"savee_to_emodb": 102}, 0.35, seed=4)])
    infos = {"emodb_to_savee": {"train_corpora": ["emodb"], "test_corpus": "savee"},
             "savee_to_emodb": {"train_corpora": ["savee"], "test_corpus": "emodb"}}
    out = tmp_path / "bench"
    results = {"in__emodb": _result("in__emodb", in_emodb, out), "in__savee": _result("in__savee", in_savee, out),
               "cross": _result("cross", cross, out, infos)}
    assert abs(results["in__emodb"].pooled["ua"] - results["in__emodb"].mean_of_folds["ua"]) > 0.01

    paths = cross_corpus_heatmaps(cells, results, out)
    assert paths == [out / "cross_corpus.png"]
    table = pd.read_csv(out / "cross_corpus.csv").set_index("train")
    long = pd.read_csv(out / "cross_corpus_cells.csv").set_index(["train", "test"])

    def pooled(frame):
        groups = frame["speaker"].tolist()
        return evaluate_classification(frame["true"].tolist(), frame["pred"].tolist(), CLASSES, groups=groups,
                                       n_boot=300, seed=0)

    for corpus, frame in (("emodb", in_emodb), ("savee", in_savee)):
        expected = pooled(frame)  # every in-domain prediction, pooled
        assert table.loc[corpus, corpus] == pytest.approx(expected.ua)
        assert (long.loc[(corpus, corpus), "ua_low"], long.loc[(corpus, corpus), "ua_high"]) == pytest.approx(
            (expected.ci["ua"].low, expected.ci["ua"].high))
    for (train, test), fold in ((("emodb", "savee"), "emodb_to_savee"), (("savee", "emodb"), "savee_to_emodb")):
        expected = pooled(cross[cross.fold == fold])  # the same computation on the pair's predictions
        assert table.loc[train, test] == pytest.approx(expected.ua)
        assert long.loc[(train, test), "ua_low"] == pytest.approx(expected.ci["ua"].low)
    assert table.loc["emodb", "emodb"] != pytest.approx(results["in__emodb"].mean_of_folds["ua"])
    assert long["interval"].nunique() == 1 and long["interval"].iloc[0].startswith("95 % speaker-cluster bootstrap")
    assert set(long["n_utterances"]) == {102, 96}


def test_leaderboard_pairs_cells_on_the_same_test_utterances(tmp_path):
    cells = _cells({
        "name": "syn", "base": {"head": "logreg", "encoder": {"name": "egemaps"}, "labels": "big4", "corpora": ["emodb"],
                                "protocol": "loso", "metrics": {"n_boot": 500}},
        "axes": {"normalisation": ["none", "global", "speaker"]}})
    ids = [c.id for c in cells]
    assert ids == ["normalisation=none", "normalisation=global", "normalisation=speaker"]
    out = tmp_path / "bench"
    base = _frame("emodb", {"f1": 40, "f2": 40, "f3": 40, "f4": 40}, 0.3, seed=5, speakers_per_fold=4)
    better = base.copy()
    flip = better.index[: int(0.8 * len(better))]
    better.loc[flip, "pred"] = better.loc[flip, "true"]  # right on most rows where base is wrong too
    other_rows = _frame("emodb", {"f1": 40, "f2": 40, "f3": 40, "f4": 40}, 0.9, seed=6, speakers_per_fold=4, prefix="x")
    frames = {ids[0]: base, ids[1]: better, ids[2]: other_rows}
    results = {i: _result(i, f, out) for i, f in frames.items()}
    board = leaderboard_rows(cells, results, {}, "ua", predictions=frames)
    by_cell = board.set_index("cell")
    assert list(board["cell"]) == [ids[2], ids[1], ids[0]]  # ranked on the mean of folds
    # the best cell against itself: exactly 0, zero width
    best = by_cell.loc[ids[2]]
    assert best["paired"] == "best (reference)" and best["ua_diff_vs_best"] == 0.0
    assert best["ua_diff_low"] == 0.0 and best["ua_diff_high"] == 0.0
    # the others were scored on other utterances than the best one
    assert set(by_cell.loc[[ids[0], ids[1]], "paired"]) == {"not paired (different test sets)"}

    # without the other test set, the clearly better cell is best and the pair excludes 0
    board = leaderboard_rows(cells[:2], {i: results[i] for i in ids[:2]}, {}, "ua", predictions=frames)
    by_cell = board.set_index("cell")
    gap = results[ids[0]].mean_of_folds["ua"] - results[ids[1]].mean_of_folds["ua"]
    row = by_cell.loc[ids[0]]
    assert row["ua_diff_vs_best"] == pytest.approx(gap) and gap < -0.2
    assert row["ua_diff_low"] < row["ua_diff_vs_best"] < row["ua_diff_high"] < 0 and row["paired"] == "excludes 0"
    again = leaderboard_rows(cells[:2], {i: results[i] for i in ids[:2]}, {}, "ua", predictions=frames)
    pd.testing.assert_frame_equal(board, again)  # seeded: the same numbers every time
    assert by_cell.loc[ids[0], "classes"] == "4 classes: anger, happiness, neutral, sadness"
    markdown = leaderboard_markdown(board, "ua", "syn leaderboard")
    assert markdown.startswith("# syn leaderboard (ranked on test; not used to choose any setting)")
    assert "paired bootstrap: the same test utterances, the same resamples" in markdown
    assert "paired speaker-cluster bootstrap within folds" in markdown
    # the same utterances split into other folds are not paired either
    refolded = better.assign(fold=better["fold"].map({"f1": "f2", "f2": "f1", "f3": "f4", "f4": "f3"}).where(
        better.index % 2 == 0, better["fold"]))
    frames_refolded = {ids[0]: base, ids[1]: refolded}
    results_refolded = {ids[0]: results[ids[0]], ids[1]: _result(ids[1], refolded, tmp_path / "refolded")}
    board = leaderboard_rows(cells[:2], results_refolded, {}, "ua", predictions=frames_refolded)
    assert set(board["paired"]) == {"best (reference)", "not paired (different folds)"}


def test_cross_corpus_folds_sharing_a_test_corpus_pair_by_name():
    from polyemo.experiment.scoring import paired_against

    # two folds test the same savee utterances (trained on emodb, and on emovo)
    one = _frame("savee", {"emodb_to_savee": 48}, 0.5, seed=7)
    two = _frame("savee", {"emovo_to_savee": 48}, 0.3, seed=8)
    cell = pd.concat([one, two], ignore_index=True)
    same = paired_against(cell, cell, CLASSES, "ua", n_boot=200)
    assert same["diff"] == 0.0 and (same["diff_low"], same["diff_high"]) == (0.0, 0.0)
    worse = cell.assign(pred=cell["pred"].where(cell.index % 3 != 0, "anger"))
    assert paired_against(cell, worse, CLASSES, "ua", n_boot=200)["paired"] in ("excludes 0", "includes 0")
    renamed = cell.assign(fold=cell["fold"].str.replace("emodb", "ravdess"))
    assert paired_against(cell, renamed, CLASSES, "ua", n_boot=200)["paired"].startswith("not paired")
