"""Ensembles of real runs: same folds checked, rules fitted on validation only, scored like runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from polyemo.experiment.ensemble import EnsembleError, ensemble_runs, load_member
from polyemo.experiment.results import RunResult


def test_a_run_without_refit_keeps_its_validation_predictions(member_runs):
    folds = sorted((member_runs["linear"] / "folds").iterdir())
    kept = pd.read_csv(folds[0] / "validation_predictions.csv")
    split = json.loads((member_runs["linear"] / "split" / "split.json").read_text())
    fold = next(f for f in split["folds"] if f["name"] == folds[0].name)
    assert set(kept["utt_id"]) == set(fold["validation"])
    assert not set(kept["utt_id"]) & set(fold["test"])
    assert np.allclose(kept.filter(like="p_").sum(axis=1), 1)
    # refitted runs keep none (their fold model saw the validation rows)
    assert not list((member_runs["logreg"] / "folds").glob("*/validation_predictions.csv"))


def test_vote_with_validation_best_tiebreak(member_runs, tmp_path):
    runs = [member_runs[n] for n in ("logreg", "linear", "svm")]
    out = ensemble_runs(runs, tmp_path / "vote", rule="vote", params={"tiebreak": "best-on-validation"},
                        names=["logreg", "linear", "svm"])
    members = [load_member(r) for r in runs]
    result = RunResult.load(tmp_path / "vote")
    assert result.head == "ensemble:vote" and result.n_folds == len(members[0].folds)
    predictions = pd.read_csv(tmp_path / "vote" / "predictions.csv")
    assert len(predictions) == sum(len(t) for t in members[0].test.values())
    # the vote by hand: majority of the members' labels, ties to each fold's chosen member
    for fold in members[0].folds:
        state = json.loads((tmp_path / "vote" / "folds" / fold / "rule.json").read_text())
        breaker = state["learned"]["tiebreak_member"]
        scores = state["learned"]["validation_ua"]
        assert breaker == max(scores, key=lambda k: (scores[k], -list(scores).index(k)))
        ens = predictions[predictions["fold"] == fold].set_index("utt_id")
        votes = pd.DataFrame({n: m.test[fold].set_index("utt_id")["pred"] for n, m in zip(["logreg", "linear", "svm"], members)})
        for utt, row in votes.iterrows():
            counts = row.value_counts()
            top = counts[counts == counts.max()].index.tolist()
            if len(top) == 1:
                assert ens.loc[utt, "pred"] == top[0]
            else:
                assert ens.loc[utt, "pred"] in top
                if row[breaker] in top:
                    assert ens.loc[utt, "pred"] == row[breaker]
    # validation for the refitted members was recomputed (selection fits), for "linear" kept
    info = json.loads((tmp_path / "vote" / "ensemble.json").read_text())
    sources = {m["name"]: m["validation"] for m in info["members"]}
    assert sources["linear"] == "kept by the run" and sources["logreg"].startswith("recomputed")
    recomputed = pd.read_csv(next((tmp_path / "vote" / "validation" / "logreg").glob("*.csv")))
    assert not set(recomputed["utt_id"]) & set(predictions["utt_id"][predictions["fold"] == recomputed["fold"][0]])
    # scored like a run; the comparison against the best member is paired
    table = pd.read_csv(tmp_path / "vote" / "members.csv")
    assert list(table["member"]) == ["logreg", "linear", "svm", "ensemble-vote"]
    assert {"f1_anger", "ua_low", "ua_high"} <= set(table.columns)
    comparison = out.comparison
    assert comparison["best_member"] in ("logreg", "linear", "svm")
    assert "diff" in comparison["paired_bootstrap"] and 0 <= comparison["mcnemar"]["p_value"] <= 1
    assert comparison["ensemble"] == pytest.approx(result.primary)
    assert (tmp_path / "vote" / "report.md").read_text().count("Against the best member") == 1


def test_member_scores_match_the_runs_own(member_runs, tmp_path):
    out = ensemble_runs([member_runs["logreg"], member_runs["svm"]], tmp_path / "mean", rule="mean")
    own = RunResult.load(member_runs["logreg"])
    row = out.members.set_index("member").loc[own.name]
    assert row["ua"] == pytest.approx(own.primary)
    assert row["pooled_ua"] == pytest.approx(own.pooled["ua"])


@pytest.mark.parametrize("rule", ["weighted", "stacking"])
def test_fitted_rules_learn_per_fold_from_validation(member_runs, tmp_path, rule):
    out = ensemble_runs([member_runs["logreg"], member_runs["linear"]], tmp_path / rule, rule=rule,
                        names=["logreg", "linear"])
    assert len(out.learned) >= 2
    for state in out.learned.values():
        assert state["learned"]["n_validation"] > 0
        if rule == "weighted":
            assert sum(state["learned"]["weights"].values()) == pytest.approx(1)
    assert 0 < out.result.primary <= 1


def test_members_of_another_split_are_refused(member_runs, member_base, tmp_path):
    from polyemo.experiment import run_experiment

    other = tmp_path / "other-seed"
    run_experiment({**member_base, "name": "other", "seed": 4, "head": {"name": "logreg", "params": {"C": [1.0]}}},
                   other, progress=False)
    with pytest.raises(EnsembleError, match="not run on the same split"):
        ensemble_runs([member_runs["logreg"], other], tmp_path / "bad")
    with pytest.raises(EnsembleError, match="at least two"):
        ensemble_runs([member_runs["logreg"]], tmp_path / "bad")
    with pytest.raises(EnsembleError, match="tiebreak 'nobody' is none of"):
        ensemble_runs([member_runs["logreg"], member_runs["svm"]], tmp_path / "bad", params={"tiebreak": "nobody"})
    with pytest.raises(EnsembleError, match="unknown ensemble rule"):
        ensemble_runs([member_runs["logreg"], member_runs["svm"]], tmp_path / "bad", rule="median")
    with pytest.raises(EnsembleError, match="no result.json"):
        ensemble_runs([member_runs["logreg"], tmp_path], tmp_path / "bad")


def test_the_command_combines_runs(member_runs, tmp_path):
    from typer.testing import CliRunner

    from polyemo.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["ensemble", str(member_runs["logreg"]), str(member_runs["linear"]),
                                      str(member_runs["svm"]), "--rule", "vote", "--tiebreak", "best-on-validation",
                                      "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "vs best member" in result.output
    assert RunResult.load(out).head == "ensemble:vote"
    bad = CliRunner().invoke(app, ["ensemble", str(member_runs["logreg"]), str(member_runs["svm"]), "--rule", "median",
                                   "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown ensemble rule" in bad.output


def test_an_ensemble_recipe_runs_members_then_ensembles(member_base, tmp_path):
    from polyemo.experiment.ensemble_bench import run_ensemble_bench

    recipe = {
        "name": "mini",
        "base": {k: v for k, v in member_base.items() if k != "limit"} | {"limit": {"per_corpus": 60}},
        "parts": [
            {"name": "a", "set": {"head": {"name": "logreg", "params": {"C": [1.0]}}}},
            {"name": "b", "set": {"head": {"name": "svm_linear", "params": {"C": [0.1]}}}},
            {"name": "c", "set": {"head": {"name": "logreg", "params": {"C": [0.01]}}, "normalisation": "global"}},
        ],
        "ensembles": [{"name": "vote", "rule": "vote"}, {"name": "pairs", "rule": "mean", "combinations": 2}],
    }
    done = run_ensemble_bench(recipe, tmp_path / "mini", progress=False)
    assert set(done.ensembles) == {"vote", "pairs.a+b", "pairs.a+c", "pairs.b+c"}
    assert list(done.table["system"][:3]) == ["a", "b", "c"]
    markdown = (tmp_path / "mini" / "ensembles.md").read_text()
    assert "vs best member" in markdown and "pairs.b+c" in markdown
    with pytest.raises(Exception, match="not cells"):
        run_ensemble_bench({**recipe, "ensembles": [{"name": "x", "members": ["a", "zz"]}]}, tmp_path / "mini",
                           progress=False)
