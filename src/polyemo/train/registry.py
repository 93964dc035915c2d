"""The estimator registry: which class trains a head (``"torch"``, ``"classical"``, ...).

An estimator is one file in :mod:`polyemo.train` whose class is decorated with
``@ESTIMATORS.register("name")``; every module of the package is imported on the first
lookup, so nothing else is edited. A head names the estimator that trains it in its
factory's ``estimator`` attribute (:class:`polyemo.heads.base.Head`: ``"torch"``,
:class:`polyemo.heads.classical.ClassicalHead`: ``"classical"``);
:func:`polyemo.train.estimator.build_estimator` looks it up here.
"""

from __future__ import annotations

from polyemo.heads import HEADS
from polyemo.registry import Registry

ESTIMATORS: Registry = Registry("estimator", "polyemo.train")


def estimator_kind(head_name: str) -> str:
    """The registry name of the estimator that trains head ``head_name`` (default ``"torch"``)."""
    return str(getattr(HEADS.get(head_name), "estimator", "torch"))
