"""Small number conventions shared by reports, results and cards."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float:
    """``float(value)``, NaN for None, NaN and infinities (JSON-safe results keep NaN as "missing")."""
    if value is None:
        return float("nan")
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def finite_or_none(value: Any) -> float | None:
    """``float(value)``, None for None, NaN and infinities (for JSON that has no NaN)."""
    value = finite(value)
    return None if math.isnan(value) else value


def percent(value: Any, digits: int = 1) -> str:
    """``0.9061 -> "90.6"``; a dash for missing values."""
    value = finite(value)
    return "—" if math.isnan(value) else f"{100 * value:.{digits}f}"
