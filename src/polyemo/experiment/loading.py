"""Reading experiment files: YAML, dotted overrides, merging, paths, readable errors.

Plain mappings in, plain mappings out: nothing here knows the experiment's fields
(:mod:`polyemo.experiment.config` validates them), so the config module imports this one
and not the other way round.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

CORPORA_ENV = ("POLYEMO_CORPORA", "POLYEMO_SHARED_CORPORA")


class ConfigError(ValueError):
    """An experiment or grid file is invalid; the message names the file and the field."""


def default_corpora_root(base: Path | None = None) -> Path:
    """``$POLYEMO_CORPORA`` (or ``$POLYEMO_SHARED_CORPORA``), else the nearest
    ``shared/corpora`` folder beside the YAML's folder or one of its parents (so
    ``../shared/corpora`` from a repository checkout), else ``./../shared/corpora``."""
    for variable in CORPORA_ENV:
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    candidates = []
    if base is not None:
        base = base.resolve()
        candidates += [folder / "shared" / "corpora" for folder in (base, *base.parents)]
    candidates.append((Path.cwd() / ".." / "shared" / "corpora").resolve())
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[-1]


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_path(d, "training.epochs", 1)``: set a nested key, creating mappings on the way.

    A string shorthand met on the way (``encoder: egemaps``) becomes ``{name: egemaps}``.
    """
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if isinstance(child, str):
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {}
        node[key] = child
        node = child
    node[keys[-1]] = value


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merge key by key, anything else replaces.

    A string shorthand in ``base`` (``head: linear``) merges as ``{name: linear}`` with a
    mapping update, so ``{head: {params: ...}}`` keeps the head's name.
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, str):
            current = {"name": current}
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = deep_merge(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-")) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def _resolve_paths(data: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """Make relative paths absolute against ``base``, and fill in corpus roots."""
    data = copy.deepcopy(data)
    base = base or Path.cwd()

    def absolute(value: Any) -> Any:
        if value is None:
            return None
        path = Path(os.path.expanduser(str(value)))
        return str(path if path.is_absolute() else (base / path).resolve())

    root = absolute(data.get("corpora_root")) if data.get("corpora_root") else str(default_corpora_root(base))
    data["corpora_root"] = root
    corpora = data.get("corpora")
    if isinstance(corpora, (str, dict)):
        corpora = [corpora]
    if isinstance(corpora, list):
        resolved = []
        for item in corpora:
            item = {"name": item} if isinstance(item, str) else dict(item) if isinstance(item, dict) else item
            if isinstance(item, dict):
                if item.get("manifest") is not None:
                    item["manifest"] = absolute(item["manifest"])
                elif item.get("name") is not None:
                    item["root"] = absolute(item["root"]) if item.get("root") else str(Path(root) / str(item["name"]))
            resolved.append(item)
        data["corpora"] = resolved
    encoder = data.get("encoder")
    if isinstance(encoder, dict) and encoder.get("cache_dir"):
        encoder["cache_dir"] = absolute(encoder["cache_dir"])
    return data


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


