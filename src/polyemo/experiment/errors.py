"""The error an experiment raises when it cannot run as configured (every stage may raise it)."""

from __future__ import annotations


class ExperimentError(RuntimeError):
    """The experiment cannot run as configured (the message says why and what to change)."""
