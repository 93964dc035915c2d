"""Faults survived by ``polyemo predict`` (issue 15): ``kill -9`` at several random points, then a
re-run, gives exactly the uninterrupted run's output; a full disk leaves the output consistent."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "serve"))
import polyemo_tiny_bundle as tiny  # noqa: E402

from polyemo.predict.outputs import partial_path, read_output  # noqa: E402

FOLDERS, PER_FOLDER = 6, 3


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, shared_corpora) -> Path:
    return tiny.shared_bundle(tmp_path_factory.getbasetemp(), shared_corpora)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, shared_corpora) -> Path:
    """18 EmoDB clips (links, not copies) in 6 folders: one normalisation group, one unit of work each."""
    root = tmp_path_factory.mktemp("clips")
    sources = sorted((shared_corpora / "emodb" / "audio").glob("*.flac"))[: FOLDERS * PER_FOLDER]
    for i, source in enumerate(sources):
        folder = root / f"speaker{i // PER_FOLDER}"
        folder.mkdir(exist_ok=True)
        (folder / source.name).symlink_to(source)
    return root


def command(bundle: Path, clips: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "polyemo", "predict", str(clips), "--model", str(bundle), "--output", str(output),
            "--speaker-norm", "per-folder", "--batch-size", "2", "--no-progress"]


def complete_lines(path: Path) -> list[dict]:
    """The partial file's lines: each complete line must be valid JSON (only a torn last line may not be)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = [json.loads(line) for line in lines[:-1]]  # everything before the last newline is complete
    return rows


@pytest.fixture(scope="module")
def reference(bundle, clips, tmp_path_factory) -> list[dict]:
    output = tmp_path_factory.mktemp("reference") / "predictions.jsonl"
    subprocess.run(command(bundle, clips, output), check=True, capture_output=True, timeout=600)
    rows = read_output(output)
    assert len(rows) == FOLDERS * PER_FOLDER and all(r["error"] is None for r in rows)
    return rows


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_gives_the_uninterrupted_output(bundle, clips, reference, tmp_path):
    output = tmp_path / "predictions.jsonl"
    rng = random.Random(15)
    # Kill points: rows already saved before the kill (0 = while the model loads), increasing.
    targets = [0] + sorted(rng.sample(range(1, FOLDERS * PER_FOLDER), 3))
    seen = []
    for target in targets:
        process = subprocess.Popen(command(bundle, clips, output), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        delay = rng.uniform(0.5, 3.0)
        started = time.monotonic()
        while process.poll() is None and time.monotonic() < deadline:
            saved = len(complete_lines(partial_path(output)))
            if (target == 0 and time.monotonic() - started > delay) or (target and saved >= target):
                break
            time.sleep(0.02)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        rows = complete_lines(partial_path(output))  # parses: nothing torn but perhaps the last line
        assert len({r["path"] for r in rows}) == len(rows), "a recording was saved twice"
        seen.append(len(rows))
    assert seen[-1] < FOLDERS * PER_FOLDER or not output.exists(), "the runs were never interrupted mid-way"
    finished = subprocess.run(command(bundle, clips, output), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    rows = read_output(output)
    assert not partial_path(output).exists()
    assert [r["path"] for r in rows] == [r["path"] for r in reference]
    assert rows == reference, "results differ from the uninterrupted run"
    # the resumed run predicted only what the killed runs had not saved
    assert f"{seen[-1]} already done" in finished.stderr or seen[-1] == 0


def test_a_full_disk_leaves_the_output_consistent_and_a_rerun_finishes(bundle, clips, reference, tmp_path, monkeypatch):
    from polyemo.predict import load_model, predict_files
    from polyemo.predict import files as files_module
    from polyemo.predict import outputs

    recogniser = load_model(bundle, encoder=tiny.encoder(), batch_size=2)
    output = tmp_path / "predictions.jsonl"
    real_add = outputs.ResumableOutput.add
    calls = {"n": 0}

    def add_until_full(self, record):
        calls["n"] += 1
        if calls["n"] > 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, record)

    monkeypatch.setattr(outputs.ResumableOutput, "add", add_until_full)
    with pytest.raises(OSError, match="No space left"):
        predict_files(recogniser, clips, output, speaker_norm="per-folder", show_progress=False)
    monkeypatch.undo()
    assert not output.exists()  # the final file is written only when everything is done
    saved = complete_lines(partial_path(output))
    assert 0 < len(saved) <= 7 and all(r["error"] is None for r in saved)
    # The final, atomic merge fails too: the partial rows survive, no half-written output appears.
    monkeypatch.setattr(files_module.ResumableOutput, "finish",
                        lambda self, *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError):
        predict_files(recogniser, clips, output, speaker_norm="per-folder", show_progress=False)
    monkeypatch.undo()
    # (a group cut short by the full disk is predicted again as a whole: its rows may appear twice, the later wins)
    assert not output.exists() and len({r["path"] for r in complete_lines(partial_path(output))}) == FOLDERS * PER_FOLDER
    summary = predict_files(recogniser, clips, output, speaker_norm="per-folder", show_progress=False)
    assert summary.skipped == FOLDERS * PER_FOLDER and summary.predicted == 0
    assert read_output(output) == reference and not partial_path(output).exists()
