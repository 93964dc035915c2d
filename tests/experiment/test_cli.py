"""``polyemo run``: a YAML file in, a run folder out; bad files give a clear error and exit 2."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from polyemo.cli import app


def test_run_command(shared_corpora, feature_cache, tmp_path):
    config = tmp_path / "emodb.yaml"
    config.write_text("corpora: [emodb]\nlabels: ekman7\nprotocol: {name: speaker_kfold, params: {k: 2}}\n"
                      "encoder: {name: whisper-base, layers: [3]}\nhead: {name: logreg}\n", encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", str(config), "-o", str(out), "--limit", "30", "--encoder", "egemaps", "--corpora-root", str(shared_corpora),
        "--set", f"encoder.cache_dir={feature_cache}", "--set", "metrics.n_boot=20", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "report.md" in result.output and "UA mean of 2 folds" in result.output and "classes" in result.output
    resolved = json.loads((out / "config.json").read_text())["config"]
    assert resolved["name"] == "emodb" and resolved["encoder"]["name"] == "egemaps"
    assert resolved["limit"]["per_corpus"] == 30 and resolved["encoder"]["layers"] == "all"
    assert (out / "result.json").is_file()


def test_run_command_reports_bad_files(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("corpora: [emodb]\nhead: {name: linear, params: {dropout: 0.1}}\nfeatures: frames\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(config), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "bad.yaml: head: head 'linear' takes pooled features but 'features' is 'frames'" in text
