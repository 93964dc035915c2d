"""recipes/abhinaya.yaml shrunk (cheap encoders, a few utterances, one epoch), run as a user
runs it: ``polyemo ensemble recipes/abhinaya.yaml``. Its members and ensembles must all finish."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from polyemo.cli import app

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "abhinaya.yaml"


def test_the_abhinaya_recipe_runs_shrunk(shared_corpora, tmp_path):
    recipe = yaml.safe_load(RECIPE.read_text())
    cache = str(tmp_path / "features")
    for part in recipe["parts"]:  # frames members read eGeMAPS LLDs, pooled ones eGeMAPS functionals
        frames = part["set"].get("features") == "frames"
        part["set"]["encoder"] = {"name": "egemaps-lld" if frames else "egemaps", "cache_dir": cache}
    recipe["base"]["metrics"]["n_boot"] = 20
    shrunk = tmp_path / "abhinaya.yaml"
    shrunk.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ensemble", str(shrunk), "-o", str(out), "--limit", "10", "--epochs", "1",
                                      "--corpora-root", str(shared_corpora), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "ensembles.csv")
    assert {"S1", "S2", "S3", "E1", "vote", "mean", "weighted"} <= set(table["system"])
    assert sum(s.startswith("trio.") for s in table["system"]) == 4  # every 3 of 4 members
    assert table[table["system"] == "vote"]["paired"].iloc[0] in ("includes 0", "excludes 0")
    assert (out / "ensembles" / "vote" / "report.md").is_file()
