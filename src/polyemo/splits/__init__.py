"""Evaluation splits: protocols that turn a manifest into leak-free train/validation/test folds.

``make_split(manifest, protocol="emobox", label_column="label", seed=0, **params)`` runs
a protocol from :data:`PROTOCOLS` (one module each: ``emobox_official`` (EmoBox's
published folds; alias ``emobox``), ``emobox`` (``emobox_rule`` and ``emobox_coverage``:
EmoBox's fold rule, for corpora without published folds), ``loso``, ``speaker_kfold``,
``official``, ``leave_one_corpus_out``, ``leave_one_language_out``, ``cross_corpus``) and
returns a :class:`Split`; ``Split.save(dir)`` / ``Split.load(dir)``
persist it with a verified content hash; :func:`check_leakage` / :func:`assert_no_leakage`
audit any split against its manifest.

Every protocol keeps identical audio (same ``content_hash``) and, where it is speaker-
independent, every speaker on one side of each fold, and carves a non-empty validation
set from the training speakers only (see :mod:`polyemo.splits.core`). The exception is a
published partition scored as published (``emobox_official``): what its sides share is
recorded in the split and reported by :func:`documented_properties`, not changed.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from polyemo.registry import Registry
from polyemo.splits.leakage import (
    LeakageError,
    LeakageProblem,
    assert_no_leakage,
    check_leakage,
    documented_properties,
)
from polyemo.splits.model import Fold, Split, SplitError, SplitIntegrityError

# A protocol: (manifest, *, label_column, seed, **params) -> Split
PROTOCOLS: Registry[Callable[..., Split]] = Registry("split protocol", __name__)

__all__ = [
    "PROTOCOLS", "Fold", "Split", "SplitError", "SplitIntegrityError", "LeakageError", "LeakageProblem",
    "make_split", "check_leakage", "assert_no_leakage", "documented_properties",
]


def make_split(
    manifest: pd.DataFrame,
    protocol: str = "emobox",
    label_column: str = "label",
    seed: int = 0,
    **params,
) -> Split:
    """Make the folds of ``protocol`` over ``manifest``; deterministic given ``seed``.

    ``label_column`` is the target to stratify and balance on (``"arousal_level"`` for
    baved); rows without a value there are left out. ``params`` go to the protocol, e.g.
    ``validation_fraction=0.2`` (all), ``k=5`` (speaker_kfold), ``target=["de"]``
    (leave_one_language_out), ``train="emodb", test="ravdess"`` (cross_corpus).
    The returned split has been checked with :func:`assert_no_leakage`.
    """
    make = PROTOCOLS.get(protocol)
    try:
        split = make(manifest, label_column=label_column, seed=seed, **params)
    except TypeError as exc:
        # Unknown keyword arguments: say which protocol rejected them.
        if "unexpected keyword argument" in str(exc):
            raise SplitError(f"protocol {protocol!r}: {exc}") from exc
        raise
    assert_no_leakage(manifest, split)
    return split
