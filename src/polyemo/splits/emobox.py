"""EmoBox's per-corpus fold *rule*, made leak-proof and given a validation set.

Not EmoBox's published partition: that is ``emobox_official`` (plain ``emobox`` is its
alias), which loads EmoBox's own fold files. The rule is for corpora EmoBox has no folds
for (baved, your own data). Two protocols, differing only in the default ``balance``:

- ``emobox_rule``: EmoBox's literal speaker-count rule (``balance="identical"``);
- ``emobox_coverage``: the leak-proof "coverage" variant (``balance="coverage"``).

A manifest with several corpora is split corpus by corpus (each with the same seed), fold
names ``<corpus>.fold_<k>``, each fold's ``info`` naming its ``corpus``, its ``regime`` and
whether it is ``speaker_independent``.

For one corpus with S speakers (counted over rows that have a label):

1. Random regime (speaker-dependent), when ``S < 4`` or the classes are *unevenly spread
   over speakers*: one fold, ``test_fraction`` (25 %) of each class to test, drawn as whole
   content-hash groups (identical recordings stay together) until the class' test count
   reaches ``floor(test_fraction * class size)`` (EmoBox's ``int(n * 0.25)``).
2. ``4 <= S <= 6``: leave one speaker out (one fold per speaker group).
3. ``S > 6``: ``S // 4`` folds (at least 2: EmoBox's rule gives a single fold, with nothing
   left to train on, for 7 speakers); speaker groups shuffled with the seed and dealt to the fold
   with the fewest speakers so far (plain round-robin when no speakers are joined).

"Unevenly spread" (``balance``):

- ``"coverage"`` (``emobox_coverage``): some class is spoken by fewer than ``min_speakers_per_class``
  (2) speakers, so no speaker-independent fold can have that class both in training and
  in test. This keeps the speaker-count rule for every shared corpus: EmoDB 10 speakers ->
  2 folds, RAVDESS 24 -> 6, EMOVO 6 -> 6, SAVEE 4 -> 4, URDU 29 -> 7, baved 60 -> 15.
- ``"identical"`` (``emobox_rule``): EmoBox's literal test in its ``write_folds``: uneven unless every speaker
  has exactly the same count of every class. It sends EmoDB, URDU and baved to the random
  regime (EmoBox's published URDU split is indeed one random fold; its EmoDB folds come
  from a predefined list, not from this rule).

Speaker groups: speakers joined by a shared recording (baved 46 and 53) count as separate
speakers for S but are held out together, so LOSO gives one fold per group. Unlike EmoBox,
every fold gets a validation set carved from its training speakers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from polyemo.splits import PROTOCOLS
from polyemo.splits.core import (
    DEFAULT_VALIDATION_FRACTION,
    Groups,
    build_split,
    labelled_rows,
    make_fold,
    make_groups,
    rng_for,
    select_corpus,
)
from polyemo.splits.loso import loso_folds
from polyemo.splits.model import Split, SplitError

BALANCE_RULES = ("coverage", "identical")


def is_uneven(rows: pd.DataFrame, label_column: str, balance: str = "coverage", min_speakers_per_class: int = 2) -> bool:
    """Whether the classes are unevenly spread over speakers (see the module docstring)."""
    if balance == "coverage":
        speakers_per_class = rows.groupby(label_column)["speaker"].nunique()
        return bool((speakers_per_class < min_speakers_per_class).any())
    if balance == "identical":
        counts = pd.crosstab(rows["speaker"], rows[label_column])
        return len(counts.drop_duplicates()) > 1
    raise SplitError(f"unknown balance rule {balance!r}; choose one of {BALANCE_RULES}")


def regime(rows: pd.DataFrame, label_column: str, balance: str = "coverage", min_speakers_per_class: int = 2) -> str:
    """``"random"``, ``"loso"`` or ``"speaker_folds"`` for one corpus' labelled rows."""
    n_speakers = rows["speaker"].nunique()
    if n_speakers < 4 or is_uneven(rows, label_column, balance, min_speakers_per_class):
        return "random"
    return "loso" if n_speakers <= 6 else "speaker_folds"


def deal_groups(groups: Groups, n_folds: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffle speaker groups and give each to the fold with the fewest speakers so far."""
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    sizes = [0] * n_folds
    for group in rng.permutation(groups.count):
        target = min(range(n_folds), key=lambda i: (sizes[i], i))
        folds[target].append(int(group))
        sizes[target] += int(groups.n_speakers[group])
    return folds


def random_test_groups(rows: pd.DataFrame, label_column: str, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Row mask of a stratified random test set made of whole content-hash groups."""
    groups = make_groups(rows, label_column, ("content_hash",))
    chosen = np.zeros(groups.count, dtype=bool)
    majority = groups.majority
    for label_index, label in enumerate(groups.classes):
        wanted = int(test_fraction * int((rows[label_column] == label).sum()))
        taken = 0
        for group in rng.permutation(np.nonzero(majority == label_index)[0]):
            if taken >= wanted:
                break
            chosen[group] = True
            taken += int(groups.rows[group])
    return chosen[groups.ids]


def _one_corpus(
    rows: pd.DataFrame,
    *,
    label_column: str,
    seed: int,
    validation_fraction: float,
    balance: str,
    min_speakers_per_class: int,
    test_fraction: float,
) -> tuple[list, str, int]:
    """(folds, regime, speakers) of the rule applied to one corpus' labelled rows."""
    rng = rng_for(seed)
    corpus = str(rows["corpus"].iloc[0])
    chosen_regime = regime(rows, label_column, balance, min_speakers_per_class)
    n_speakers = int(rows["speaker"].nunique())
    info = {"regime": chosen_regime, "corpus": corpus, "speaker_independent": chosen_regime != "random"}
    common = dict(label_column=label_column, validation_fraction=validation_fraction, rng=rng)
    if chosen_regime == "random":
        in_test = random_test_groups(rows, label_column, test_fraction, rng)
        folds = [make_fold("fold_1", rows[~in_test], rows[in_test], speaker_independent=False, info=info, **common)]
    elif chosen_regime == "loso":
        folds = loso_folds(rows, info=info, **common)
    else:
        groups = make_groups(rows, label_column)
        folds = []
        for index, members in enumerate(deal_groups(groups, max(2, n_speakers // 4), rng), start=1):
            in_test = np.isin(groups.ids, members)
            folds.append(make_fold(f"fold_{index}", rows[~in_test], rows[in_test], info=info, **common))
    return folds, chosen_regime, n_speakers


def emobox_rule_split(
    manifest: pd.DataFrame,
    protocol: str,
    *,
    label_column: str,
    seed: int,
    corpus: str | None,
    validation_fraction: float,
    balance: str,
    min_speakers_per_class: int,
    test_fraction: float,
) -> Split:
    """The rule's folds of one corpus, or of every corpus of the manifest one by one."""
    rng_for(seed)  # checks the seed
    rows = labelled_rows(select_corpus(manifest, corpus), label_column)
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if balance not in BALANCE_RULES:
        raise SplitError(f"unknown balance rule {balance!r}; choose one of {BALANCE_RULES}")
    corpora = sorted(rows["corpus"].unique())
    settings = dict(label_column=label_column, seed=seed, validation_fraction=validation_fraction, balance=balance,
                    min_speakers_per_class=min_speakers_per_class, test_fraction=test_fraction)
    params = {"corpus": corpora[0] if len(corpora) == 1 else None, "validation_fraction": validation_fraction,
              "balance": balance, "min_speakers_per_class": min_speakers_per_class, "test_fraction": test_fraction}
    folds, regimes, speakers = [], {}, {}
    for name in corpora:
        part, regimes[name], speakers[name] = _one_corpus(rows[rows["corpus"] == name], **settings)
        # Several corpora: corpus-prefixed fold names, as every per-corpus protocol names them.
        folds += part if len(corpora) == 1 else [f.model_copy(update={"name": f"{name}.{f.name}"}) for f in part]
    if len(corpora) == 1:
        params.update(regime=regimes[corpora[0]], n_speakers=speakers[corpora[0]])
    else:
        params.update(per_corpus=True, regime=regimes, n_speakers=speakers)
    return build_split(
        manifest, protocol, folds, seed=seed, label_column=label_column,
        speaker_independent=all(r != "random" for r in regimes.values()), params=params,
    )


def _rule_protocol(name: str, balance: str, doc: str):
    """One registered variant of the rule: its name in the split and its default balance."""
    def protocol(
        manifest: pd.DataFrame,
        *,
        label_column: str = "label",
        seed: int = 0,
        corpus: str | None = None,
        validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
        balance: str = balance,
        min_speakers_per_class: int = 2,
        test_fraction: float = 0.25,
    ) -> Split:
        return emobox_rule_split(
            manifest, name, label_column=label_column, seed=seed, corpus=corpus,
            validation_fraction=validation_fraction, balance=balance,
            min_speakers_per_class=min_speakers_per_class, test_fraction=test_fraction,
        )

    protocol.__name__ = protocol.__qualname__ = name
    protocol.__doc__ = doc
    return PROTOCOLS.register(name)(protocol)


emobox_coverage = _rule_protocol(
    "emobox_coverage", "coverage", 'EmoBox\'s fold rule, leak-proof "coverage" variant, per corpus (see the module docstring).')
emobox_rule = _rule_protocol(
    "emobox_rule", "identical", 'EmoBox\'s literal speaker-count rule (``balance="identical"``), per corpus.')
