"""Run one experiment: manifest -> features -> split -> folds -> metrics and report.

:func:`run_experiment` writes a run folder::

    config.yaml, config.json     the resolved configuration (paths absolute)
    manifest.csv                 the experiment's rows (with their ``target`` class)
    feature_failures.csv         rows the encoder could not use (left out)
    split/                       split.json (verified hash) + one CSV per fold
    folds/<fold>/predictions.csv, fold.json, training_log.jsonl
    predictions.csv              every test utterance: utt_id, corpus, speaker, fold, true,
                                 pred, p_<class>...
    metrics.json, metrics.md     per fold, mean_of_folds AND pooled (bootstrap CIs)
    metrics_confusion.png        pooled confusion matrix
    by_corpus.json               pooled metrics per test corpus (several corpora)
    layer_weights.png            learned layer weights (weighted layers), mean over folds
    layer_selection.png          validation score per layer (best-on-validation)
    cross_corpus.png, .csv       train corpus x test corpus UA (cross_corpus protocol)
    report.md                    a short human report
    result.json                  :class:`RunResult`, written last: the run is complete

Validation comes from each fold's training speakers (the split protocols carve it), the
checkpoint, ``C`` and the layer are chosen on it, and the test part is opened once, after
training, through :class:`polyemo.train.SealedSplit`. Folds whose ``fold.json`` exists are
not run again, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from polyemo.experiment.config import ExperimentConfig, load_experiment
from polyemo.experiment.data import TARGET_COLUMN, classes_of, experiment_manifest
from polyemo.io import read_table, write_json, write_table, write_text

RUN_FILE = "result.json"
FOLD_FILE = "fold.json"
# Files a fresh run removes from an existing run folder (never anything else).
RUN_OUTPUTS = (
    "config.yaml", "config.json", "manifest.csv", "feature_failures.csv", "corpus_failures.csv", "predictions.csv",
    "metrics.json", "metrics.md", "metrics_confusion.png", "by_corpus.json", "layer_weights.png",
    "layer_selection.png", "cross_corpus.png", "cross_corpus.csv", "cross_corpus_cells.csv", "report.md", RUN_FILE,
)


class ExperimentError(RuntimeError):
    """The experiment cannot run as configured (the message says why and what to change)."""


class FoldSummary(BaseModel):
    name: str
    n_train: int
    n_validation: int
    n_test: int
    ua: float
    wa: float
    macro_f1: float
    classes: list[str]
    selected_layer: int | None = None
    best_epoch: int | None = None
    seconds: float = 0.0
    info: dict[str, Any] = Field(default_factory=dict)
    #: classes present in the fold's test references (UA and macro-F1 average over these)
    scored_classes: list[str] = Field(default_factory=list)
    n_test_speakers: int = 0


class RunResult(BaseModel):
    """What a finished run reports (``result.json``); the full metrics are in ``metrics.json``."""

    name: str
    out_dir: str
    fingerprint: str
    protocol: str
    encoder: str
    head: str
    classes: list[str]
    primary_metric: str
    #: the primary metric: mean over folds (EmoBox reports this), its std, and pooled with CI
    primary: float
    primary_std: float
    pooled: dict[str, float]
    pooled_ci: dict[str, list[float]]
    mean_of_folds: dict[str, float]
    n_utterances: int
    n_folds: int
    folds: list[FoldSummary]
    by_corpus: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: interval of the mean of folds of the primary metric, and of every metric
    primary_ci: list[float] = Field(default_factory=list)
    mean_of_folds_ci: dict[str, list[float]] = Field(default_factory=dict)
    #: how each kind of interval was drawn, e.g. {"mean_of_folds": "95 % speaker-cluster bootstrap within folds ..."}
    intervals: dict[str, str] = Field(default_factory=dict)
    #: classes present in the test references (the classes UA averages over) and the normalisation
    scored_classes: list[str] = Field(default_factory=list)
    normalisation: str = ""
    #: the primary metric in one line: mean of folds and pooled, intervals, classes, protocol, normalisation
    headline: str = ""
    seconds: dict[str, float] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        path = Path(path)
        if path.is_dir():
            path = path / RUN_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


# --- helpers -----------------------------------------------------------------------------------

def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), disable=not enabled)


def _finite(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def _gender_codes(values: pd.Series) -> np.ndarray:
    text = values.astype("string").str.lower().fillna("")
    return np.where(text.isin(["f", "female"]), 0, np.where(text.isin(["m", "male"]), 1, -1)).astype(np.int64)


def _encode(values: pd.Series, classes: list[str]) -> np.ndarray:
    position = {c: i for i, c in enumerate(classes)}
    return np.array([position.get(v, -1) if isinstance(v, str) else -1 for v in values.astype(object)], dtype=np.int64)


def prepare_run_dir(out_dir: Path, config: ExperimentConfig, fresh: bool) -> None:
    """Create the folder; refuse to mix results of two different configurations."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in RUN_OUTPUTS:
            (out_dir / name).unlink(missing_ok=True)
        for folder in ("folds", "split"):
            if (out_dir / folder).is_dir():
                shutil.rmtree(out_dir / folder)
        return
    previous = out_dir / "config.json"
    if previous.exists():
        try:
            old = json.loads(previous.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            old = None
        if old != config.fingerprint():
            raise ExperimentError(
                f"{out_dir} holds a run of a different configuration (fingerprint {old}, this one "
                f"{config.fingerprint()}); choose another output folder or pass fresh=True (--fresh)")


def write_config(out_dir: Path, config: ExperimentConfig) -> None:
    resolved = config.resolved()
    write_text(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    write_json(out_dir / "config.json", {"fingerprint": config.fingerprint(), "config": resolved})


# --- split -------------------------------------------------------------------------------------

def make_experiment_split(config: ExperimentConfig, manifest: pd.DataFrame):
    """The protocol's folds over the experiment's rows (label column ``target``).

    The EmoBox protocols (``emobox_official``, ``emobox_rule``, ``emobox_coverage``) split
    each corpus on its own themselves (fold names ``<corpus>.fold_<k>``);
    ``cross_corpus`` defaults to every ordered pair of the experiment's corpora.
    """
    from polyemo.splits import SplitError, make_split

    protocol = config.protocol.canonical
    params = dict(config.protocol.params)
    corpora = sorted(manifest["corpus"].unique())
    try:
        if protocol == "cross_corpus":
            params.setdefault("train", corpora)
            params.setdefault("test", corpora)
        return make_split(manifest, protocol, label_column=TARGET_COLUMN, seed=config.seed, **params)
    except SplitError as error:
        raise ExperimentError(f"experiment {config.name!r}: cannot split with {protocol}: {error}") from None


def saved_or_new_split(out_dir: Path, config: ExperimentConfig, manifest: pd.DataFrame):
    from polyemo.splits import Split, SplitIntegrityError

    split = make_experiment_split(config, manifest)
    folder = out_dir / "split"
    if (folder / "split.json").exists():
        try:
            saved = Split.load(folder)
        except SplitIntegrityError as error:
            raise ExperimentError(f"{folder}: {error}; remove the run folder or run with fresh=True") from None
        if saved.sha256 != split.sha256:
            raise ExperimentError(
                f"{folder}: the saved split differs from the one this configuration makes now (the data "
                "changed?); its finished folds would not match; rerun with fresh=True (--fresh)")
        return saved
    split.save(folder)
    return split


# --- one fold ----------------------------------------------------------------------------------

class FoldInputs:
    """Feature rows of the experiment, addressable by utt_id."""

    def __init__(self, manifest: pd.DataFrame, array, layers: list[int]) -> None:
        self.manifest = manifest
        self.array = array
        self.layers = layers
        self.row_of = {u: i for i, u in enumerate(manifest["utt_id"].astype(str))}

    def split_data(self, rows: pd.DataFrame, classes: list[str], masks: dict[str, np.ndarray]):
        from polyemo.train import SplitData

        index = np.array([self.row_of[u] for u in rows["utt_id"].astype(str)], dtype=np.int64)
        if isinstance(self.array, np.ndarray):
            features = self.array[index]
        else:
            features = [self.array[i] for i in index]
        corpus = rows["corpus"].astype(str).tolist()
        fallback = np.ones(len(classes), dtype=bool)
        return SplitData(
            features=features,
            labels=_encode(rows[TARGET_COLUMN], classes),
            masks=np.stack([masks.get(c, fallback) for c in corpus]) if len(rows) else np.zeros((0, len(classes)), bool),
            speakers=rows["speaker"].astype(object).to_numpy(),
            utt_ids=rows["utt_id"].astype(str).to_numpy(),
            gender=_gender_codes(rows["gender"]),
        )


def fold_class_masks(rows: pd.DataFrame, classes: list[str]) -> dict[str, np.ndarray]:
    """Per corpus, which of ``classes`` its TRAINING rows contain (never from test rows)."""
    return {str(corpus): np.array([c in set(part[TARGET_COLUMN]) for c in classes], dtype=bool)
            for corpus, part in rows.groupby("corpus", sort=True)}


def select_layer_on_validation(train, val, head_config, train_config, classes) -> tuple[int, dict[int, float]]:
    """Index of the loaded layer whose head scores best on VALIDATION (ties: the lower layer)."""
    from polyemo.train import build_estimator

    scores: dict[int, float] = {}
    quiet = train_config.model_copy(update={"show_progress": False, "log_path": None, "checkpoint_path": None})
    for index in range(train.num_layers):
        estimator = build_estimator(head_config, quiet, len(classes), list(classes))
        report = estimator.fit(train.select_layer(index), val.select_layer(index))
        scores[index] = float(report.best_score)
    best = max(scores, key=lambda i: (scores[i], -i))
    return best, scores


def run_fold(config: ExperimentConfig, fold, parts: dict[str, pd.DataFrame], inputs: FoldInputs,
             classes: list[str], fold_dir: Path, show_progress: bool) -> pd.DataFrame:
    """Train on the fold's train part, select on validation, predict the test part once."""
    from polyemo.experiment.selection import fit_on_training
    from polyemo.train import SealedSplit

    started = time.perf_counter()
    train_rows, val_rows, test_rows = parts["train"], parts["validation"], parts["test"]
    fold_classes = [c for c in classes if c in set(train_rows[TARGET_COLUMN])]
    if len(fold_classes) < 2:
        raise ExperimentError(f"fold {fold.name}: its training part has fewer than two classes ({fold_classes})")
    if val_rows.empty:
        raise ExperimentError(
            f"fold {fold.name}: no validation rows (its training part has fewer than two speakers); "
            "raise limit.per_corpus or choose another protocol")
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_config = config.train_config(show_progress=show_progress, log_path=fold_dir / "training_log.jsonl")
    # Every choice (candidates, layer, C, epoch) and the refit see the train/validation rows only.
    fitted = fit_on_training(config, train_rows, val_rows, inputs, fold_classes, train_config)
    estimator, report = fitted.estimator, fitted.report

    # The test part is built (and sealed) only after every choice was made on train/validation.
    masks = fold_class_masks(pd.concat([train_rows, val_rows]), fold_classes)
    test_data = fitted.prepare(inputs.split_data(test_rows, fold_classes, masks), inputs.layers)
    test = SealedSplit(test_data, name=f"{fold.name} test")
    prediction = estimator.predict(test.open(report.receipt))
    # enrolled-speaker normalisation: each test speaker's enrolment clips only fed its statistics
    enrolment = getattr(estimator.normaliser, "enrolment", None)
    scored = ~enrolment(test_data) if enrolment is not None else np.ones(len(test_rows), dtype=bool)
    test_rows, n_enrolment = test_rows[scored], int((~scored).sum())
    prediction = type(prediction)(prediction.probabilities[scored], {k: v[scored] for k, v in prediction.outputs.items()})

    # Probabilities over the experiment's classes (0 for classes this fold never trained on).
    probabilities = np.zeros((len(test_rows), len(classes)))
    for j, name in enumerate(fold_classes):
        probabilities[:, classes.index(name)] = prediction.probabilities[:, j]
    predicted = [fold_classes[i] for i in prediction.predictions]
    frame = pd.DataFrame({
        "utt_id": test_rows["utt_id"].astype(str).to_numpy(),
        "corpus": test_rows["corpus"].astype(str).to_numpy(),
        "language": test_rows["language"].astype(str).to_numpy(),
        "speaker": test_rows["speaker"].astype(str).to_numpy(),
        "fold": fold.name,
        "true": test_rows[TARGET_COLUMN].astype(str).to_numpy(),
        "pred": predicted,
    })
    for j, name in enumerate(classes):
        frame[f"p_{name}"] = probabilities[:, j]
    write_table(fold_dir / "predictions.csv", frame)

    weights = estimator.layer_weights()
    summary = {
        "name": fold.name,
        "classes": fold_classes,
        "n_train": len(train_rows), "n_validation": len(val_rows), "n_test": len(test_rows),
        "n_enrolment": n_enrolment,  # test clips that only fed enrolled-speaker statistics (not in n_test)
        # rows the scored model was trained on: train + validation after a refit
        "n_fit": (fitted.refit or {}).get("n_rows", len(train_rows)),
        "refit": fitted.refit,
        "selected_layer": fitted.selected_layer,
        "layer_scores": fitted.layer_scores,
        "layers": fitted.encoder_layers,
        "loaded_layers": [int(x) for x in inputs.layers],
        "selection": None if fitted.selection is None else fitted.selection.model_dump(mode="json"),
        "best_epoch": report.best_epoch,
        "val_metrics": {k: report.val_metrics.get(k) for k in ("ua", "wa", "macro_f1")},
        "history": report.history,
        "layer_weights": None if weights is None else np.asarray(weights).tolist(),
        "seconds": round(time.perf_counter() - started, 3),
        "info": fold.info,
    }
    write_json(fold_dir / FOLD_FILE, summary)  # last: the fold is finished
    return frame


# --- aggregation and report ---------------------------------------------------------------------

def _plot_layer_selection(folds: list[dict[str, Any]], path: Path) -> Path | None:
    rows = [f for f in folds if f.get("layer_scores")]
    if not rows:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyemo.io import atomic_path

    layers = sorted({int(k) for f in rows for k in f["layer_scores"]})
    scores = np.array([[f["layer_scores"].get(str(layer), np.nan) for layer in layers] for f in rows])
    chosen = [f["selected_layer"] for f in rows]
    figure = Figure(figsize=(max(4.0, 0.4 * len(layers) + 2), 3.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(layers, np.nanmean(scores, axis=0), marker="o", label="mean over folds")
    axes.fill_between(layers, np.nanmin(scores, axis=0), np.nanmax(scores, axis=0), alpha=0.2, label="fold range")
    counts = {layer: chosen.count(layer) for layer in layers}
    for layer in layers:
        if counts[layer]:
            axes.annotate(f"chosen x{counts[layer]}", (layer, np.nanmax(scores[:, layers.index(layer)])),
                          textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
    axes.set_xlabel("encoder layer")
    axes.set_ylabel("validation score")
    axes.set_title("Layer chosen on validation (training speakers only)", fontsize=9)
    axes.legend(fontsize="small")
    figure.subplots_adjust(left=0.15, right=0.97, bottom=0.16, top=0.88)  # fixed margins: tight_layout is slow
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_cross_corpus(matrix: pd.DataFrame, path: Path, title: str = "Cross-corpus UA (%)",
                      low: pd.DataFrame | None = None, high: pd.DataFrame | None = None) -> Path:
    """Heatmap of a (train corpus x test corpus) table of UA in [0, 1]; NaN cells blank.

    ``low``/``high`` (same shape): each cell's interval, written under its value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyemo.io import atomic_path

    values = matrix.to_numpy(dtype=float)
    bounds = None
    if low is not None and high is not None:
        bounds = (low.reindex(index=matrix.index, columns=matrix.columns).to_numpy(dtype=float),
                  high.reindex(index=matrix.index, columns=matrix.columns).to_numpy(dtype=float))
    figure = Figure(figsize=((1.4 if bounds else 1.0) * values.shape[1] + 2.5, 0.8 * values.shape[0] + 1.8), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="UA")
    axes.set_xticks(range(values.shape[1]), labels=list(matrix.columns), rotation=45, ha="right")
    axes.set_yticks(range(values.shape[0]), labels=list(matrix.index))
    axes.set_xlabel("test corpus")
    axes.set_ylabel("train corpus")
    from matplotlib.patches import Rectangle

    in_domain = False
    for i, row in enumerate(matrix.index):
        for j, column in enumerate(matrix.columns):
            if np.isfinite(values[i, j]):
                text = f"{100 * values[i, j]:.1f}"
                if bounds is not None and np.isfinite(bounds[0][i, j]) and np.isfinite(bounds[1][i, j]):
                    text += f"\n[{100 * bounds[0][i, j]:.0f}, {100 * bounds[1][i, j]:.0f}]"
                axes.text(j, i, text, ha="center", va="center", fontsize=8 if bounds is None else 7,
                          color="black" if values[i, j] > 0.6 else "white")
                if row == column:  # trained and tested on the same corpus (speaker-independent folds)
                    axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
                    in_domain = True
    if in_domain:
        title += "\nred outline: in-domain (same corpus, its own folds)"
    axes.set_title(title, fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", bbox_inches="tight")
    return path


def cross_corpus_table(cells: pd.DataFrame, column: str = "ua") -> pd.DataFrame | None:
    """Train corpus x test corpus matrix of ``column`` from the long table of cells made by
    :func:`polyemo.experiment.scoring.cross_corpus_cells` (every cell pooled over its own test
    predictions, the same way on and off the diagonal); None when there are no cells."""
    from polyemo.experiment.scoring import cells_table

    if cells is None or cells.empty:
        return None
    return cells_table(cells, column)


def _md_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _pct(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def write_report(out_dir: Path, config: ExperimentConfig, result: RunResult, aggregate, manifest: pd.DataFrame,
                 feature_failures: int, images: dict[str, str],
                 corpus_classes: dict[str, list[str]] | None = None) -> None:
    from polyemo.experiment.scoring import class_text, normalisation_text

    corpora = manifest.groupby("corpus").agg(utterances=("utt_id", "size"), speakers=("speaker", "nunique"),
                                             language=("language", "first")).reset_index()
    protocol_params = f" {json.dumps(config.protocol.params)}" if config.protocol.params else ""
    head_params = f" {json.dumps(config.head.params)}" if config.head.params else ""
    lines = [
        f"# {config.name}",
        "",
        f"**{result.headline}.**",
        "",
        f"Std of the {result.primary_metric} over folds: {_pct(result.primary_std)} points. Every test utterance "
        "was scored once, by the model of the fold that held it out; no setting was chosen on test scores.",
        "",
        "## Setup",
        "",
        f"- target: `{config.target}`; classes of the experiment: {class_text(result.classes)}",
        f"- classes scored (present in the test references; UA and macro-F1 average over them): "
        f"{class_text(result.scored_classes)}",
        f"- protocol: `{result.protocol}`{protocol_params}",
        f"- encoder: `{config.encoder.name}` (precision {config.encoder.precision or 'default'}, layers "
        f"{config.encoder.layers}, selection {config.encoder.select}); features: {config.features}",
        f"- head: `{config.head.name}`{head_params}; loss: `{config.loss.name}`; "
        f"normalisation: {normalisation_text(result.normalisation or config.normalisation, config.training.get('enrol_clips'))}; "
        f"seed {config.seed}",
        "- validation: carved from each fold's training speakers; the test part is read once after training",
        *([f"- select: {len(config.select.expanded())} candidate settings chosen in each fold by "
           f"`{config.select.by}` over its training rows only (fold.json: `selection`)"] if config.select else []),
        f"- refit on train + validation after the choices: {'yes' if config.train_config().refit else 'no'}",
        f"- intervals: mean of folds: {result.intervals.get('mean_of_folds', 'none')}; "
        f"pooled: {result.intervals.get('pooled', 'none')}",
    ]
    if config.limit.active:
        lines.append(f"- **limited** data (smoke test): {config.limit.model_dump(exclude_none=True)}")
    lines += ["", "## Data", "", _md_table(corpora)]
    if feature_failures:
        lines += ["", f"{feature_failures} rows had no features and were left out (feature_failures.csv)."]
    fold_rows = pd.DataFrame([{
        "fold": f.name, "train": f.n_train, "val": f.n_validation, "test": f.n_test,
        "test speakers": f.n_test_speakers or "",
        "UA %": _pct(f.ua), "WA %": _pct(f.wa), "macro-F1 %": _pct(f.macro_f1),
        "classes scored": len(f.scored_classes) or "",
        "layer": "" if f.selected_layer is None else f.selected_layer,
        "epoch": "" if f.best_epoch is None else f.best_epoch,
    } for f in result.folds])
    lines += ["", "## Folds", "", _md_table(fold_rows), "", "## Aggregate", "", aggregate.to_markdown()]
    if result.by_corpus:
        primary = result.primary_metric
        rows = []
        for corpus, m in result.by_corpus.items():
            scored = (corpus_classes or {}).get(corpus, [])
            rows.append({"corpus": corpus, **{k: _pct(v) for k, v in m.items() if not k.endswith(("_low", "_high"))},
                         f"{primary} CI": f"[{_pct(m.get(f'{primary}_low', math.nan))}, {_pct(m.get(f'{primary}_high', math.nan))}]",
                         "classes scored": f"{len(scored)}: {', '.join(scored)}" if scored else ""})
        lines += ["", f"## By test corpus (pooled, %; CI: {result.intervals.get('pooled_by_corpus', '')})", "",
                  _md_table(pd.DataFrame(rows))]
    for title, name in images.items():
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    lines += ["", f"Time: {seconds}.", ""]
    write_text(out_dir / "report.md", "\n".join(lines))


def _normalisation_label(config: ExperimentConfig, folds: list[dict[str, Any]]) -> str:
    """The normalisation's name, or, where ``select`` chose it per fold, what each fold chose."""
    if config.select is None or not any("normalisation" in c for c in config.select.expanded()):
        return config.normalisation
    chosen = []
    for fold in folds:
        record = fold.get("selection") or {}
        if record:
            chosen.append(record["candidates"][record["chosen"]].get("normalisation", config.normalisation))
    counts = {name: chosen.count(name) for name in dict.fromkeys(chosen)}
    options = sorted({c.get("normalisation", config.normalisation) for c in config.select.expanded()})
    return (f"chosen in each fold by select ({config.select.by}) among {', '.join(options)}: "
            + ", ".join(f"{name} in {n} of {len(chosen)} folds" for name, n in counts.items()))


def aggregate_run(config: ExperimentConfig, out_dir: Path, split, manifest: pd.DataFrame, classes: list[str],
                  predictions: dict[str, pd.DataFrame], fold_info: dict[str, dict[str, Any]],
                  seconds: dict[str, float], feature_failures: int) -> RunResult:
    from polyemo.experiment.scoring import class_text, cross_corpus_cells, has_speakers, headline, normalisation_text
    from polyemo.heads.layers import plot_layer_weights
    from polyemo.metrics import FoldPredictions, aggregate_folds, evaluate_classification
    from polyemo.report import write_report as write_metrics

    names = [f.name for f in split.folds]
    all_predictions = pd.concat([predictions[n] for n in names], ignore_index=True)
    # Speakers are the resampling unit unless the config says utterances or no row names a speaker.
    by_speaker = config.metrics.bootstrap_unit == "speaker" and has_speakers(all_predictions["speaker"])
    n_boot, alpha, seed = config.metrics.n_boot, config.metrics.alpha, config.seed
    fold_predictions = [
        FoldPredictions(y_true=predictions[n]["true"].tolist(), y_pred=predictions[n]["pred"].tolist(), name=n,
                        groups=predictions[n]["speaker"].astype(str).tolist() if by_speaker else None,
                        # pooled: speakers resampled within each test corpus (every corpus keeps its share)
                        strata=predictions[n]["corpus"].astype(str).tolist())
        for n in names
    ]
    aggregate = aggregate_folds(fold_predictions, labels=classes, task="classification",
                                n_boot=n_boot, alpha=alpha, seed=seed, strata_name="test corpora")
    primary = config.metrics.primary
    enrol = config.training.get("enrol_clips")  # enrolment clips per speaker (enrolled-speaker)
    scored = list(aggregate.pooled.evaluated_classes)
    intervals: dict[str, str] = {}
    if aggregate.mean_of_folds[primary].ci is not None:
        intervals["mean_of_folds"] = aggregate.mean_of_folds[primary].ci.describe()
    if primary in aggregate.pooled.ci:
        intervals["pooled"] = aggregate.pooled.ci[primary].describe()
    mean_of_folds_ci = {k: [_finite(s.ci.low), _finite(s.ci.high)] for k, s in aggregate.mean_of_folds.items() if s.ci is not None}
    pooled = {k: _finite(v) for k, v in aggregate.pooled.summary().items()}
    pooled_ci = {k: [_finite(c.low), _finite(c.high)] for k, c in aggregate.pooled.ci.items()}
    normalisation = _normalisation_label(config, [fold_info[n] for n in names])
    line = headline(primary, len(names), _finite(aggregate.mean_of_folds[primary].mean), mean_of_folds_ci.get(primary),
                    intervals.get("mean_of_folds", ""), pooled[primary], pooled_ci.get(primary), intervals.get("pooled", ""),
                    scored, split.protocol, normalisation, enrol)
    summary = (f"{line}.\n\nClasses of the experiment: {class_text(classes)}. Protocol `{split.protocol}`; "
               f"normalisation {normalisation_text(normalisation, enrol)}. `mean_of_folds`: each fold scored on its "
               "own test utterances, then averaged; `pooled`: every test prediction scored together.")
    write_metrics(aggregate, out_dir, name="metrics", title=f"{config.name}: {config.protocol.canonical}", summary=summary)
    write_table(out_dir / "predictions.csv", all_predictions)

    folds = []
    for name, metrics in zip(names, aggregate.folds):
        info = fold_info[name]
        folds.append(FoldSummary(
            name=name, n_train=info["n_train"], n_validation=info["n_validation"], n_test=info["n_test"],
            ua=_finite(metrics.ua), wa=_finite(metrics.wa), macro_f1=_finite(metrics.macro_f1),
            classes=info["classes"], selected_layer=info.get("selected_layer"), best_epoch=info.get("best_epoch"),
            seconds=info.get("seconds", 0.0), info=info.get("info", {}),
            scored_classes=list(metrics.evaluated_classes),
            n_test_speakers=int(predictions[name]["speaker"].nunique()) if by_speaker else 0,
        ))

    by_corpus: dict[str, dict[str, float]] = {}
    corpus_classes: dict[str, list[str]] = {}
    if all_predictions["corpus"].nunique() > 1:
        report = {}
        for corpus, rows in all_predictions.groupby("corpus", sort=True):
            result = evaluate_classification(rows["true"].tolist(), rows["pred"].tolist(), classes,
                                             groups=rows["speaker"].astype(str).tolist() if by_speaker else None,
                                             n_boot=n_boot, alpha=alpha, seed=seed)
            report[str(corpus)] = result.model_dump(mode="json")
            by_corpus[str(corpus)] = {k: _finite(v) for k, v in result.summary().items()}
            if primary in result.ci:
                by_corpus[str(corpus)].update({f"{primary}_low": _finite(result.ci[primary].low),
                                               f"{primary}_high": _finite(result.ci[primary].high)})
                intervals["pooled_by_corpus"] = result.ci[primary].describe()
            corpus_classes[str(corpus)] = list(result.evaluated_classes)
        write_json(out_dir / "by_corpus.json", report)

    images = {"Confusion matrix (pooled over folds)": "metrics_confusion.png"}
    # Only folds whose model learned layer weights (``select`` may give other folds another head).
    weighted = [n for n in names if fold_info[n].get("layer_weights") is not None]
    weights = [fold_info[n]["layer_weights"] for n in weighted]
    if weights and len({len(w) for w in weights}) == 1 and len(weights[0]) > 1:
        layer_names = [str(x) for x in fold_info[weighted[0]]["layers"]]
        plot_layer_weights(np.array(weights), out_dir / "layer_weights.png", layer_names=layer_names,
                           title=f"Learned layer weights ({config.encoder.name}), mean ± std over folds")
        images["Layer weights"] = "layer_weights.png"
    if _plot_layer_selection([fold_info[n] for n in names], out_dir / "layer_selection.png"):
        images["Layer selection"] = "layer_selection.png"
    cells = cross_corpus_cells(all_predictions, {n: fold_info[n].get("info", {}) for n in names}, classes,
                               by_speaker=by_speaker, n_boot=n_boot, alpha=alpha, seed=seed, source=config.name)
    table = cross_corpus_table(cells)
    if table is not None:
        write_table(out_dir / "cross_corpus.csv", table.reset_index())
        write_table(out_dir / "cross_corpus_cells.csv", cells)
        plot_cross_corpus(table, out_dir / "cross_corpus.png", low=cross_corpus_table(cells, "ua_low"),
                          high=cross_corpus_table(cells, "ua_high"),
                          title=f"Cross-corpus UA (%), {config.name}: pooled over each cell's test predictions"
                                + (f"\nbrackets: {cells['interval'].iloc[0]}" if cells["interval"].iloc[0] else ""))
        images["Cross-corpus UA"] = "cross_corpus.png"

    result = RunResult(
        name=config.name, out_dir=str(out_dir), fingerprint=config.fingerprint(), protocol=split.protocol,
        encoder=config.encoder.name, head=config.head.name, classes=classes, primary_metric=primary,
        primary=_finite(aggregate.mean_of_folds[primary].mean), primary_std=_finite(aggregate.mean_of_folds[primary].std),
        pooled=pooled, pooled_ci=pooled_ci,
        mean_of_folds={k: _finite(s.mean) for k, s in aggregate.mean_of_folds.items()},
        n_utterances=len(manifest), n_folds=len(names), folds=folds, by_corpus=by_corpus, seconds=seconds,
        primary_ci=mean_of_folds_ci.get(primary, []), mean_of_folds_ci=mean_of_folds_ci, intervals=intervals,
        scored_classes=scored, normalisation=normalisation, headline=line,
    )
    write_report(out_dir, config, result, aggregate, manifest, feature_failures, images, corpus_classes)
    result.files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    result.files.append(RUN_FILE)
    write_json(out_dir / RUN_FILE, result.model_dump(mode="json"))
    return result


# --- the entry point ----------------------------------------------------------------------------

# The encoder of the latest run in this process: the cache needs an encoder (for its identity)
# even when every feature is cached, and loading a neural encoder takes seconds, so the
# cells of a grid share one instance.
_ENCODER: dict[str, Any] = {}


def shared_encoder(config: ExperimentConfig):
    """The experiment's encoder, reused from the previous run in this process when identical."""
    from polyemo.encoders import get_encoder

    options = config.encoder.encoder_options()
    key = json.dumps([config.encoder.name, options], sort_keys=True, default=str)
    if key not in _ENCODER:
        _ENCODER.clear()  # one encoder in memory at a time
        try:
            _ENCODER[key] = get_encoder(config.encoder.name, **options)
        except (ValueError, KeyError, FileNotFoundError, TypeError) as error:
            raise ExperimentError(f"experiment {config.name!r}: cannot load encoder {config.encoder.name!r}: {error}") from None
    return _ENCODER[key]


def run_experiment(
    config: str | Path | dict[str, Any] | ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> RunResult:
    """Run an experiment (a YAML path, a mapping or a config) into ``out_dir``.

    ``overrides``: dotted keys applied before validation, e.g. ``{"limit": 20,
    "training.epochs": 1, "encoder": {"name": "egemaps"}}``. Default ``out_dir``:
    ``runs/<name>``. A finished run (``result.json`` of the same configuration) is returned
    as it is; an interrupted one resumes, skipping finished folds. ``fresh`` first removes
    the previous outputs of the folder.
    """
    from polyemo.cache import features
    from polyemo.experiment.final import train_final_model

    started = time.perf_counter()
    config = load_experiment(config, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    prepare_run_dir(out, config, fresh)
    done = out / RUN_FILE
    if done.exists():
        previous = RunResult.load(done)
        if previous.fingerprint == config.fingerprint():
            train_final_model(config, out, progress=progress)  # only with final_model; reused when current
            return previous
    write_config(out, config)

    manifest, corpus_failures = experiment_manifest(config, show_progress=progress)
    if len(corpus_failures):
        write_table(out / "corpus_failures.csv", corpus_failures)
    layers = None if config.encoder.layers == "all" else list(config.encoder.layers)
    t_features = time.perf_counter()
    encoder = shared_encoder(config)
    try:
        extracted = features(
            manifest, encoder, layers=layers, kind=config.features, cache_dir=config.encoder.cache_dir,
            workers=config.encoder.workers, batch_seconds=config.encoder.batch_seconds, progress=progress,
            frame_dtype=config.encoder.frame_dtype, failures_path=out / "feature_failures.csv",
        )
    except (ValueError, KeyError, FileNotFoundError) as error:
        raise ExperimentError(f"experiment {config.name!r}: encoder {config.encoder.name!r}: {error}") from None
    seconds = {"features": round(time.perf_counter() - t_features, 3)}
    ok = np.asarray(extracted.ok, dtype=bool)
    if not ok.any():
        raise ExperimentError(f"experiment {config.name!r}: no row got features (see {out / 'feature_failures.csv'})")
    array = extracted.array[ok] if isinstance(extracted.array, np.ndarray) else [a for a, k in zip(extracted.array, ok) if k]
    manifest = manifest[ok].reset_index(drop=True)
    write_table(out / "manifest.csv", manifest)
    classes = classes_of(config, manifest)
    if len(classes) < 2:
        raise ExperimentError(f"experiment {config.name!r}: the data has fewer than two classes ({classes})")

    split = saved_or_new_split(out, config, manifest)
    inputs = FoldInputs(manifest, array, list(extracted.layers))
    predictions: dict[str, pd.DataFrame] = {}
    fold_info: dict[str, dict[str, Any]] = {}
    t_folds = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(f"{config.name} folds", total=len(split.folds), status="")
        for fold in split.folds:
            fold_dir = out / "folds" / fold.name
            if (fold_dir / FOLD_FILE).exists() and (fold_dir / "predictions.csv").exists():
                predictions[fold.name] = read_table(fold_dir / "predictions.csv").astype({"true": str, "pred": str})
                fold_info[fold.name] = json.loads((fold_dir / FOLD_FILE).read_text(encoding="utf-8"))
                bar.update(task, advance=1, status=f"{fold.name}: done before")
                continue
            bar.update(task, status=fold.name)
            parts = split.frames(manifest, fold.name)
            predictions[fold.name] = run_fold(config, fold, parts, inputs, classes, fold_dir, progress)
            fold_info[fold.name] = json.loads((fold_dir / FOLD_FILE).read_text(encoding="utf-8"))
            bar.update(task, advance=1)
    seconds["folds"] = round(time.perf_counter() - t_folds, 3)
    seconds["total"] = round(time.perf_counter() - started, 3)
    result = aggregate_run(config, out, split, manifest, classes, predictions, fold_info, seconds,
                           feature_failures=int((~ok).sum()))
    train_final_model(config, out, progress=progress)  # only with final_model (the deployable model)
    return result
