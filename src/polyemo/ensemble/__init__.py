"""Ensemble rules: how the class probabilities of several members become one decision.

A rule works on arrays only (no runs, no bundles, no encoders), so the experiment stage
(:mod:`polyemo.experiment.ensemble`: members are runs on the same folds) and prediction
(ensemble bundles) combine members with the same code. One module per rule registers a
:class:`~polyemo.ensemble.base.Rule` subclass in :data:`RULES`; adding a rule is adding a file.

Every rule is ``fit`` on the members' VALIDATION probabilities and labels (rows no member
was trained on) and then ``combine``\\ s test probabilities; rules with nothing to learn
ignore the fit. Members' probabilities are ``(N, C)`` arrays over the same classes, in the
same order (:func:`polyemo.ensemble.base.align_classes` reorders by class name).
"""

from __future__ import annotations

from polyemo.registry import Registry

RULES: Registry = Registry("ensemble rule", __name__)

from polyemo.ensemble.base import Combined, Rule, align_classes, build_rule, load_rule  # noqa: E402

__all__ = ["RULES", "Combined", "Rule", "align_classes", "build_rule", "load_rule"]
