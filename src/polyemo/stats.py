"""What is in a manifest: files, hours, speakers and label counts per corpus and language."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from polyemo.labels import CANONICAL

AROUSAL_LEVELS = ("low", "neutral", "high")
BASE_COLUMNS = ["corpus", "language", "files", "hours", "speakers", "unlabelled"]


def _label_columns(manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Canonical labels present (in taxonomy order, then any others) and arousal levels present."""
    present = set(manifest["label"].dropna().astype(str))
    labels = [c for c in CANONICAL if c in present] + sorted(present - set(CANONICAL))
    levels: list[str] = []
    if "arousal_level" in manifest.columns:
        seen = set(manifest["arousal_level"].dropna().astype(str))
        levels = [lv for lv in AROUSAL_LEVELS if lv in seen] + sorted(seen - set(AROUSAL_LEVELS))
    return labels, levels


def corpus_stats(manifest: pd.DataFrame, total: bool = True) -> pd.DataFrame:
    """One row per (corpus, language): files, hours, speakers, rows without a category
    (``unlabelled``), one count column per canonical label and one ``arousal_<level>``
    column per arousal level (BAVED). With ``total``, a last row ``all``/``all`` sums them
    (speakers counted once)."""
    labels, levels = _label_columns(manifest)
    frame = manifest.copy()
    frame["language"] = frame["language"].fillna("?")
    duration = pd.to_numeric(frame["duration"], errors="coerce").fillna(0.0)
    frame["_seconds"] = duration

    def summarise(rows: pd.DataFrame) -> dict:
        out = {
            "files": len(rows),
            "hours": rows["_seconds"].sum() / 3600.0,
            "speakers": rows["speaker"].nunique(),
            "unlabelled": int(rows["label"].isna().sum()),
        }
        counts = rows["label"].value_counts()
        out.update({label: int(counts.get(label, 0)) for label in labels})
        if levels:
            level_counts = rows["arousal_level"].value_counts()
            out.update({f"arousal_{lv}": int(level_counts.get(lv, 0)) for lv in levels})
        return out

    records = [
        {"corpus": corpus, "language": language, **summarise(rows)}
        for (corpus, language), rows in frame.groupby(["corpus", "language"], sort=True)
    ]
    if total and len(records) > 1:
        records.append({"corpus": "all", "language": "all", **summarise(frame)})
    columns = BASE_COLUMNS + labels + [f"arousal_{lv}" for lv in levels]
    table = pd.DataFrame.from_records(records, columns=columns)
    return table.astype({c: "int64" for c in columns if c not in ("corpus", "language", "hours")})


def plot_label_counts(manifest: pd.DataFrame, png: str | os.PathLike[str]) -> Path:
    """Bar chart of label counts (and BAVED-style arousal levels), stacked by corpus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polyemo.io import atomic_path

    table = corpus_stats(manifest, total=False)
    labels, levels = _label_columns(manifest)
    categories = labels + [f"arousal_{lv}" for lv in levels]
    if not categories:
        raise ValueError("the manifest has no labels or arousal levels to plot")
    per_corpus = table.groupby("corpus")[categories].sum()
    figure, axes = plt.subplots(figsize=(max(6.0, 0.8 * len(categories) + 3), 4.5))
    bottom = pd.Series(0, index=categories, dtype="float64")
    for corpus, counts in per_corpus.iterrows():
        axes.bar(categories, counts.values, bottom=bottom.values, label=str(corpus))
        bottom += counts.astype("float64")
    axes.set_ylabel("files")
    axes.set_title(f"Label counts ({len(manifest)} files, {manifest['corpus'].nunique()} corpora)")
    axes.tick_params(axis="x", labelrotation=45)
    axes.set_ylim(0, max(1.0, float(bottom.max())) * 1.08)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="corpus")
    figure.tight_layout()
    png = Path(png)
    with atomic_path(png) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return png
