"""Experiment and grid files: validation errors name the file and the field; defaults; overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyemo.experiment import ConfigError, load_bench, load_experiment
from polyemo.experiment.config import default_corpora_root


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ("corpora: [emodb]\nencoder: {name: whisper-base, layers: []}\n", "encoder.layers", "at least one layer"),
        ("corpora: [emodb]\nhead: frame_mlp\n", "head", "takes frames features"),
        ("corpora: [emodb]\nprotocol: {name: leave_one_planet_out}\n", "protocol.name", "unknown protocol"),
        ("corpora: [emodb]\ntraining: {epochs: 0}\n", "training.epochs", "greater than or equal to 1"),
        ("corpora: [emodb]\ntraining: {loss: focal}\n", "training", "set by the experiment's own fields"),
        ("corpora: [emodb]\nloss: {name: hinge}\n", "loss.name", "unknown loss"),
        ("corpora: [emodb]\nlabels: big5\n", "labels", "unknown label set"),
        ("corpora: [baved]\ntarget: arousal_level\nlabels: big4\n", "labels", "own classes"),
        ("corpora: [emodb]\nnormalisation: per_planet\n", "normalisation", "Input should be"),
        ("corpora: [emodb]\nheads: linear\n", "heads", "Extra inputs are not permitted"),
        ("corpora: [atlantis]\n", "corpora.0", "unknown corpus recipe"),
        ("corpora: [emodb, emodb]\n", "corpora", "repeat"),
        ("corpora: [{manifest: a.csv, root: b}]\n", "corpora.0", "'root' applies to recipes"),
        ("corpora: [emodb]\nlimit: {per_corpus: 0}\n", "limit.per_corpus", "greater than or equal to 1"),
        ("corpora: [emodb]\nhead: {name: linear, layers: 3}\n", "head", "encoder.layers"),
        ("encoder: whisper-base\n", "corpora", "Field required"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path, body, field, message):
    path = write(tmp_path / "exp.yaml", body)
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    text = str(caught.value)
    assert f"{path}: {field}:" in text and message in text


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_experiment(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(write(tmp_path / "bad.yaml", "corpora: [emodb\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_experiment(write(tmp_path / "list.yaml", "- emodb\n"))


def test_shorthands_defaults_and_paths(tmp_path, monkeypatch):
    for variable in ("POLYEMO_CORPORA", "POLYEMO_SHARED_CORPORA"):
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / "shared" / "corpora").mkdir(parents=True)
    (tmp_path / "repo" / "recipes").mkdir(parents=True)
    path = write(tmp_path / "repo" / "recipes" / "zs.yaml", (
        "corpora: [emodb, {name: savee, root: ../data/savee}, {manifest: mine.csv}]\n"
        "encoder: {name: whisper-base, layers: best-on-validation}\n"
        "head: logreg\nloss: focal\nprotocol: lolo\nlimit: 12\n"))
    config = load_experiment(path)
    assert config.name == "zs"
    assert config.corpora_root == (tmp_path / "shared" / "corpora").resolve()  # nearest shared/corpora above the YAML
    assert config.corpora[0].root == config.corpora_root / "emodb"
    assert config.corpora[1].root == (tmp_path / "repo" / "data" / "savee").resolve()
    assert config.corpora[2].manifest == (tmp_path / "repo" / "recipes" / "mine.csv").resolve()
    assert config.encoder.layers == "all" and config.encoder.select == "best-on-validation"
    assert config.head.name == "logreg" and config.loss.name == "focal"
    assert config.protocol.canonical == "leave_one_language_out"
    assert config.limit.per_corpus == 12 and config.limit.per_speaker is None
    assert config.label_set().name == "all" and config.metrics.primary == "ua"
    train = config.train_config()
    assert train.loss == "focal" and train.seed == 0 and train.normalisation == "none"

    monkeypatch.setenv("POLYEMO_CORPORA", str(tmp_path / "elsewhere"))
    assert default_corpora_root(path.parent) == tmp_path / "elsewhere"
    assert load_experiment(path).corpora[0].root == tmp_path / "elsewhere" / "emodb"


def test_overrides_for_smoke_tests(tmp_path):
    path = write(tmp_path / "exp.yaml", (
        "corpora: [emodb]\nencoder: {name: whisper-base, layers: [3], precision: bf16}\ntraining: {epochs: 30, lr: 0.01}\n"))
    config = load_experiment(path, {"limit": {"per_corpus": 5}, "training.epochs": 1, "encoder": {"name": "egemaps"}})
    assert config.limit.per_corpus == 5
    assert config.training == {"epochs": 1, "lr": 0.01}
    assert config.encoder.name == "egemaps" and config.encoder.layers == "all" and config.encoder.precision is None
    with pytest.raises(ConfigError, match=r"exp.yaml: training.epochs"):
        load_experiment(path, {"training.epochs": -1})


def test_fingerprint_tracks_what_changes_results(tmp_path):
    base = {"corpora": ["emodb"], "corpora_root": str(tmp_path)}
    first = load_experiment(base)
    assert load_experiment({**base, "name": "other", "encoder": {"name": "whisper-base", "workers": 2}}).fingerprint() == first.fingerprint()
    assert load_experiment({**base, "seed": 1}).fingerprint() != first.fingerprint()
    assert load_experiment({**base, "head": "logreg"}).fingerprint() != first.fingerprint()


def test_grid_cells_and_errors(tmp_path):
    path = write(tmp_path / "grid.yaml", """
base: {head: logreg, protocol: emobox}
axes:
  corpora: [emodb, {id: baved, set: {corpora: [baved], target: arousal_level}}]
  normalisation: [none, speaker]
parts:
  - name: a
  - name: b
    set: {head: {name: logreg, params: {C: [0.1, 1.0]}}}
    axes: {encoder: [whisper-base, {name: whisper-tiny.en, layers: [2]}]}
""")
    bench, cells = load_bench(path)
    assert bench.name == "grid"
    ids = [c.id for c in cells]
    assert ids[:4] == ["a__emodb__normalisation=none", "a__emodb__normalisation=speaker",
                       "a__baved__normalisation=none", "a__baved__normalisation=speaker"]
    assert len(cells) == 4 + 8 and len(set(ids)) == len(ids)
    baved = cells[2].config
    assert baved.target == "arousal_level" and [c.name for c in baved.corpora] == ["baved"]
    tiny = next(c for c in cells if c.id == "b__emodb__normalisation=none__whisper-tiny.en")
    assert tiny.config.encoder.layers == [2] and tiny.config.head.params == {"C": [0.1, 1.0]}
    assert tiny.config.name == "grid.b__emodb__normalisation=none__whisper-tiny.en"

    bad = write(tmp_path / "bad.yaml", "base: {protocol: emobox, labels: big4}\naxes: {corpora: [emodb, {id: baved, set: {corpora: [baved], target: arousal_level}}]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml \[cell baved\]: labels: target arousal_level"):
        load_bench(bad)
    with pytest.raises(ConfigError, match="needs a non-empty list"):
        load_bench(write(tmp_path / "empty.yaml", "base: {corpora: [emodb]}\naxes: {head: []}\n"))
    with pytest.raises(ConfigError, match=r"unknown.yaml: axs: Extra inputs"):
        load_bench(write(tmp_path / "unknown.yaml", "base: {corpora: [emodb]}\naxs: {head: [linear]}\n"))
