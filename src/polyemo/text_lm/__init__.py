"""Language-model branches over text (transcripts or the manifest's ``text`` column).

:mod:`~polyemo.text_lm.zero_shot`: any transformers causal LM (a local folder or a hub id,
offline by default) prompted with the categories; each class is scored by the
log-likelihood of its name after the prompt (no free text is generated or parsed).
"""

from polyemo.text_lm.zero_shot import ZeroShotConfig, ZeroShotLM

__all__ = ["ZeroShotConfig", "ZeroShotLM"]
