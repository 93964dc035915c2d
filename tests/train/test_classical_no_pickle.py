"""Classical heads are stored without pickle (issue 15): safetensors + JSON, exact round trips;
pickle run folders, untrusted classes and tampered files are refused naming the file."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

from polyemo.heads import HeadConfig
from polyemo.train import SplitData, TrainConfig, build_estimator, load_estimator
from polyemo.train.sklearn_state import UnsafeStateError, load_state, save_state

CLASSES = ["anger", "happiness", "neutral"]
SRC = Path(__file__).resolve().parents[2] / "src"


def _data(seed: int = 0, n: int = 90) -> SplitData:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = np.eye(3)[y] * 2 + rng.normal(size=(n, 3))
    x = np.concatenate([x, rng.normal(size=(n, 5))], axis=1)
    return SplitData(np.stack([x, x * 0.5], axis=1).astype(np.float32), y)


@pytest.fixture(params=[("logreg", {"C": [0.1, 1.0]}), ("svm_linear", {}), ("svm_rbf", {"C": 2.0}),
                        ("logreg", {"class_weight": "balanced"})], ids=["logreg-2C", "svm_linear", "svm_rbf", "balanced"])
def fitted(request):
    name, params = request.param
    estimator = build_estimator(HeadConfig(name=name, params=params), TrainConfig(show_progress=False), 3, CLASSES)
    estimator.fit(_data(0), _data(1))
    return estimator


def test_round_trip_is_exact_and_has_no_pickle(fitted, tmp_path):
    folder = fitted.save(tmp_path / "model")
    files = sorted(p.name for p in folder.iterdir())
    assert "head.safetensors" in files and "head.json" in files and "head.joblib" not in files
    for path in folder.iterdir():  # no pickle opcodes anywhere (protocol 2+ starts with 0x80)
        assert not path.read_bytes().startswith(b"\x80"), path
    loaded = load_estimator(folder)
    probe = _data(7)
    np.testing.assert_array_equal(loaded.predict_proba(probe), fitted.predict_proba(probe))
    assert loaded.head.selected_C == fitted.head.selected_C
    assert loaded.head.validation_scores == fitted.head.validation_scores


def test_a_pickle_run_folder_is_refused_with_a_clear_error(fitted, tmp_path):
    folder = fitted.save(tmp_path / "old-run")
    (folder / "head.json").unlink()
    (folder / "head.safetensors").unlink()
    joblib.dump(fitted.head, folder / "head.joblib")  # what polyemo < issue 15 wrote
    with pytest.raises(UnsafeStateError, match=r"old-run/head\.joblib: a classical head stored with pickle.*Re-run"):
        load_estimator(folder)


class Exploit:
    """Would run code if unpickled; must never be rebuilt."""

    def __reduce__(self):
        return (Path("/tmp/polyemo-pwned").touch, ())


def test_untrusted_classes_and_tampered_files_are_refused(fitted, tmp_path):
    folder = fitted.save(tmp_path / "model")
    document = folder / "head.json"
    original = json.loads(document.read_text())
    # A class that is not on the trusted list (here: os.system's module) is refused by name.
    tampered = json.loads(json.dumps(original).replace("polyemo.heads.classical.", "os.", 1))
    document.write_text(json.dumps(tampered))
    with pytest.raises(UnsafeStateError, match=r"head\.json: class 'os\..*' is not on the trusted list"):
        load_estimator(folder)
    document.write_text(json.dumps({**original, "object": {"__pickle__": "gASV"}}))
    with pytest.raises(UnsafeStateError, match="unknown tag"):
        load_estimator(folder)
    document.write_text(json.dumps({**original, "object": {"__scalar__": "|O", "value": 1}}))
    with pytest.raises(UnsafeStateError, match="not numeric"):
        load_estimator(folder)
    document.write_text(json.dumps(original))
    (folder / "head.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(UnsafeStateError, match=r"head\.safetensors: not a readable safetensors file"):
        load_estimator(folder)
    with pytest.raises(TypeError, match="not a trusted class"):
        save_state(Exploit(), tmp_path, "exploit")
    assert not Path("/tmp/polyemo-pwned").exists()
    assert pickle  # (the module is only imported to show the exploit class would be picklable)


def test_no_pickle_or_unsafe_torch_load_in_the_package():
    pattern = (r"^\s*(import|from) (pickle|joblib|cloudpickle|dill|shelve)\b|pickle\.loads?\(|joblib\.load\(|"
               r"torch\.load\(|allow_pickle=True")
    found = subprocess.run(["grep", "-rnE", "--include=*.py", pattern, str(SRC)],
                           capture_output=True, text=True).stdout.splitlines()
    unsafe = [line for line in found if "torch.load(" not in line or "weights_only=True" not in line]
    assert unsafe == [], unsafe


def test_a_full_disk_while_saving_leaves_no_half_head(fitted, tmp_path, monkeypatch):
    import errno

    import polyemo.io

    real = polyemo.io.atomic_path

    def second_write_fails(target):
        if Path(target).name == "head.json":  # written after head.safetensors
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(target)

    monkeypatch.setattr(polyemo.io, "atomic_path", second_write_fails)
    with pytest.raises(OSError, match="No space left"):
        fitted.save(tmp_path / "model")
    monkeypatch.undo()
    folder = tmp_path / "model"
    assert not list(folder.glob(".*.tmp")) and not (folder / "head.json").exists()
    with pytest.raises(FileNotFoundError, match=r"model/(estimator|head)\.json"):
        load_estimator(folder)  # a clear error naming the missing file, never a half-read head
    fitted.save(folder)  # the next save completes the folder
    np.testing.assert_array_equal(load_estimator(folder).predict_proba(_data(3)), fitted.predict_proba(_data(3)))
