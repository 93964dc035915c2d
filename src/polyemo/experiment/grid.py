"""A benchmark's grid: the YAML file of a bench (:class:`BenchConfig`) and the cells it expands to.

Each :class:`Cell` is one validated :class:`~polyemo.experiment.config.ExperimentConfig`
with its id and its value on every axis; :mod:`polyemo.experiment.bench` runs them. The
file's format is described there.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyemo.experiment.config import (
    ConfigError,
    ExperimentConfig,
    deep_merge,
    experiment_from_dict,
    format_validation_error,
    read_yaml,
    set_path,
)

#: axes whose string values are names (their id is the value itself)
NAMED_AXES = {"corpora", "encoder", "head", "protocol", "loss", "labels", "features", "target"}
#: axes that say WHERE a model is trained/tested, not WHAT the model is (heatmap grouping)
DATA_AXES = {"corpora", "protocol"}


class GridPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)


class BenchConfig(BaseModel):
    """A grid of experiments: ``base`` settings, ``axes`` and optional ``parts``."""

    model_config = ConfigDict(extra="forbid")

    name: str = "bench"
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    parts: list[GridPart] = Field(default_factory=list)
    # the leaderboard's ranking metric: a categorical one, or a dimensional one for target: dimensions
    primary: Literal["ua", "wa", "macro_f1", "mean_ccc", "ccc_arousal", "ccc_valence", "ccc_dominance"] | None = None


@dataclass
class Cell:
    """One experiment of the grid."""

    id: str
    part: str | None
    axes: dict[str, str]  # axis -> value id
    config: ExperimentConfig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", str(text)).strip("_") or "x"


def axis_value(axis: str, value: Any) -> tuple[str, dict[str, Any]]:
    """(id, overrides) of one axis value."""
    if isinstance(value, dict) and "set" in value:
        extra = sorted(set(value) - {"id", "set"})
        if "id" not in value or extra or not isinstance(value["set"], dict):
            raise ValueError(f"axis {axis!r}: a variant with 'set' needs exactly 'id' and a mapping 'set', got {sorted(value)}")
        return str(value["id"]), copy.deepcopy(value["set"])
    update: dict[str, Any] = {}
    set_path(update, axis, copy.deepcopy(value))
    leaf = axis.split(".")[-1]
    if isinstance(value, dict):
        ident = str(value.get("name", value.get("id", json.dumps(value, sort_keys=True))))
    elif isinstance(value, list):
        ident = "+".join(str(v if not isinstance(v, dict) else v.get("name", v.get("manifest", "?"))) for v in value)
    elif isinstance(value, str) and axis in NAMED_AXES:
        ident = value
    else:
        ident = f"{leaf}={value}"
    return ident, update


def expand_grid(bench: BenchConfig, source: str = "grid", base_dir: Path | None = None,
                overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Every cell of the grid, validated (errors name the file and the cell)."""
    parts = bench.parts or [GridPart()]
    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for part in parts:
        axes = {**bench.axes, **part.axes}
        for axis, values in axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{source}: axis {axis!r}{' of part ' + part.name if part.name else ''} needs a non-empty list of values")
        choices = [[(axis, v) for v in values] for axis, values in axes.items()]
        for combo in itertools.product(*choices) if choices else [()]:
            data = deep_merge(bench.base, part.set)
            ids = [part.name] if part.name else []
            axis_ids: dict[str, str] = {}
            for axis, value in combo:
                try:
                    ident, update = axis_value(axis, value)
                except ValueError as error:
                    raise ConfigError(f"{source}: {error}") from None
                data = deep_merge(data, update)
                ids.append(ident)
                axis_ids[axis] = ident
            for key, value in (overrides or {}).items():
                set_path(data, key, copy.deepcopy(value))  # replaces, as for a single experiment
            cell_id = "__".join(_slug(i) for i in ids) or "default"
            if cell_id in seen:
                seen[cell_id] += 1
                cell_id = f"{cell_id}-{seen[cell_id]}"
            else:
                seen[cell_id] = 1
            data["name"] = f"{bench.name}.{cell_id}"
            try:
                config = experiment_from_dict(data, f"{source} [cell {cell_id}]", base_dir)
            except ConfigError as error:
                raise ConfigError(str(error)) from None
            cells.append(Cell(cell_id, part.name, axis_ids, config))
    return cells


def load_bench(source: str | Path | dict[str, Any] | BenchConfig,
               overrides: dict[str, Any] | None = None) -> tuple[BenchConfig, list[Cell]]:
    """The grid and its validated cells from a YAML path, a mapping or a config."""
    if isinstance(source, BenchConfig):
        bench, name, base_dir = source, "grid", None
    else:
        if isinstance(source, dict):
            data, name, base_dir = copy.deepcopy(source), "grid", None
        else:
            path = Path(source)
            data, name, base_dir = read_yaml(path), str(path), path.resolve().parent
            data.setdefault("name", path.stem)
        try:
            bench = BenchConfig(**data)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, name)) from None
    return bench, expand_grid(bench, name, base_dir, overrides)
