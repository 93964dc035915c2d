"""Helpers shared by the command modules (not a command module: the leading _ keeps it out
of the auto-import)."""

from __future__ import annotations

import json

import typer


def parse_key_values(pairs: list[str], example: str = "KEY=VALUE") -> dict:
    """``KEY=VALUE`` pairs from repeatable options; values are read as JSON when they parse
    (numbers, lists, true), else kept as strings."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected {example}, got {pair!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed
