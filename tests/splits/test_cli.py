"""``polyemo split`` end to end on EmoDB and a three-corpus pool."""

from __future__ import annotations

from typer.testing import CliRunner

from polyemo import manifest as mf
from polyemo.cli import app
from polyemo.splits import Split, check_leakage


def test_split_command_saves_a_checked_split(tmp_path, manifests):
    path = mf.save(manifests["emodb"], tmp_path / "emodb")[0]
    out = tmp_path / "split"
    result = CliRunner().invoke(app, ["split", str(path), "--protocol", "emobox_coverage", "--seed", "0", "-o", str(out)], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "emobox_coverage split, seed 0, 2 folds" in result.output
    assert "leakage check passed" in result.output
    split = Split.load(out)
    assert len(split.folds) == 2 and check_leakage(manifests["emodb"], split) == []
    # The table shows speakers / utterances per part of each fold.
    fold = split.folds[0]
    assert f"{len(fold.info['test_speakers'])} / {len(fold.test)}" in result.output


def test_split_command_zero_shot_and_errors(tmp_path, manifests):
    paths = [str(mf.save(manifests[c], tmp_path / c)[0]) for c in ("emodb", "emovo", "savee")]
    out = tmp_path / "lolo"
    runner = CliRunner()
    result = runner.invoke(app, ["split", *paths, "-p", "leave_one_language_out", "--target", "it", "-o", str(out)], terminal_width=120)
    assert result.exit_code == 0, result.output
    (fold,) = Split.load(out).folds
    assert fold.name == "holdout_it" and len(fold.test) == 588
    result = runner.invoke(app, ["split", paths[0], "-p", "official", "-o", str(tmp_path / "x")], terminal_width=120)
    assert result.exit_code == 2 and "no official split" in result.output
    assert not (tmp_path / "x").exists()
