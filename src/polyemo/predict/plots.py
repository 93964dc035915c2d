"""The timeline plot of a segmented prediction: class probabilities per speech segment.

matplotlib is imported only when a plot is drawn (and without pyplot: no display, no global state).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from polyemo.predict.results import Prediction, prediction_record

#: One colour per canonical emotion, shared with the web page (polyemo/web/app.js).
EMOTION_COLOURS = {
    "anger": "#e03131", "boredom": "#a47148", "calm": "#38d9a9", "contempt": "#9c36b5",
    "disgust": "#5c940d", "fear": "#7048e8", "happiness": "#f59f00", "neutral": "#868e96",
    "sadness": "#1c7ed6", "surprise": "#f783ac", "other": "#495057",
}


def plot_timeline(prediction: Prediction | dict[str, Any], path: str | os.PathLike[str] | None = None,
                  classes: Sequence[str] | None = None, title: str | None = None):
    """Class probabilities over time of a segmented prediction (stacked bars per segment).

    Saved to ``path`` (png/pdf/svg, atomically) when given; returns the matplotlib Figure.
    """
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    data = prediction_record(prediction) if isinstance(prediction, Prediction) else dict(prediction)
    segments = data.get("segments")
    if not segments:
        raise ValueError(f"{data.get('path')}: no segments to plot (predict with segmentation)")
    segments = [s if isinstance(s, dict) else asdict(s) for s in segments]
    classes = list(classes or data.get("probabilities") or segments[0]["probabilities"])
    duration = float(data.get("duration") or segments[-1]["end"])
    width = max(6.0, min(16.0, duration / 4))
    fig = Figure(figsize=(width, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    seconds_per_char = 0.065 * duration / (width - 2.2)  # 7 pt text over the axes' width
    for seg in segments:
        bottom = 0.0
        for cls in classes:
            value = float(seg["probabilities"].get(cls, 0.0))
            ax.bar(seg["start"], value, width=seg["end"] - seg["start"], bottom=bottom, align="edge",
                   color=EMOTION_COLOURS.get(cls, "#495057"), edgecolor="white", linewidth=0.3)
            bottom += value
        narrow = seg["end"] - seg["start"] < len(seg["label"]) * seconds_per_char
        ax.text((seg["start"] + seg["end"]) / 2, 1.02, seg["label"], ha="center", va="bottom", fontsize=7,
                rotation=90 if narrow else 0)
    handles = [ax.bar(0, 0, color=EMOTION_COLOURS.get(c, "#495057"), label=c) for c in classes]
    ax.legend(handles=handles, labels=classes, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1.45 if any(s["end"] - s["start"] < len(s["label"]) * seconds_per_char for s in segments) else 1.18)
    ax.set_yticks([0, 0.5, 1.0])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    label = data.get("label")
    ax.set_title(title or f"{Path(str(data.get('path', ''))).name}: {label} overall", fontsize=10)
    fig.tight_layout()
    if path is not None:
        from polyemo.io import atomic_path

        suffix = Path(path).suffix.lstrip(".") or "png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, dpi=120)
    return fig
