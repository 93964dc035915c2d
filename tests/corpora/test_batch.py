"""prepare_all: every known corpus below a folder, resumable, one bad corpus or file never
stops the rest."""

import os
import time

import pandas as pd

from polyemo import manifest as mf
from polyemo.corpora import prepare_all


def test_prepare_all_writes_resumes_and_reports_failures(make_tree, isolated_cache, tmp_path):
    root = make_tree({
        "emodb/wav/03a01Fa.wav": None,
        "emodb/wav/08b02Wc.wav": None,
        "emodb/wav/09a04Ta.wav": "corrupt: not audio",
        "ravdess/Actor_01/03-01-06-01-02-01-01.wav": None,
        "savee/readme.txt": "no audio here",  # the recipe finds nothing: a failed corpus
        "notes/x.wav": None,  # not a corpus name
    }, root_name="corpora")
    out = tmp_path / "manifests"

    summary = prepare_all(root, out, show_progress=False).set_index("corpus")
    assert summary.loc["emodb", "status"] == "prepared" and summary.loc["emodb", "files"] == 2
    assert summary.loc["emodb", "failures"] == 1
    assert summary.loc["ravdess", "status"] == "prepared"
    assert summary.loc["savee", "status"] == "failed"
    assert summary.loc["notes", "status"].startswith("skipped")

    everything = mf.load(out / "all.parquet")
    assert sorted(everything["corpus"].unique()) == ["emodb", "ravdess"] and len(everything) == 3
    assert len(mf.load(out / "all.csv")) == 3 and len(mf.load(out / "emodb.csv")) == 2
    failures = pd.read_csv(out / "failures.csv")
    assert sorted(failures["corpus"]) == ["emodb", "savee"]
    assert failures.set_index("corpus").loc["emodb", "path"].endswith("09a04Ta.wav")
    assert "no savee audio files found" in failures.set_index("corpus").loc["savee", "error"]

    # Second run: nothing changed, nothing re-prepared; failures are kept.
    summary = prepare_all(root, out, show_progress=False).set_index("corpus")
    assert summary.loc[["emodb", "ravdess"], "status"].tolist() == ["up to date", "up to date"]
    assert summary.loc["emodb", "failures"] == 1
    assert len(pd.read_csv(out / "failures.csv")) == 2

    # A new file makes that corpus stale, and only that corpus.
    added = root / "ravdess/Actor_02/03-01-03-01-01-01-02.wav"
    added.parent.mkdir()
    added.write_bytes((root / "ravdess/Actor_01/03-01-06-01-02-01-01.wav").read_bytes())
    future = time.time() + 5
    os.utime(added, (future, future))
    summary = prepare_all(root, out, show_progress=False).set_index("corpus")
    assert summary.loc["ravdess", "status"] == "prepared" and summary.loc["ravdess", "files"] == 2
    assert summary.loc["emodb", "status"] == "up to date"
    assert len(mf.load(out / "all.parquet")) == 4

    summary = prepare_all(root, out, force=True, show_progress=False).set_index("corpus")
    assert summary.loc[["emodb", "ravdess"], "status"].tolist() == ["prepared", "prepared"]
