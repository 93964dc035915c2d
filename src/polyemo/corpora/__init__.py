"""Corpus recipes: each turns a corpus, as users download it, into a manifest.

One module per corpus registers a :class:`~polyemo.corpora.base.Recipe` in ``RECIPES``.
"""

from __future__ import annotations

from polyemo.corpora.base import Recipe, prepare, scan
from polyemo.registry import Registry

RECIPES: Registry[type[Recipe]] = Registry("corpus recipe", __name__)

__all__ = ["RECIPES", "Recipe", "prepare", "scan", "get_recipe"]


def get_recipe(name: str, **options) -> Recipe:
    return RECIPES.get(name)(**options)


from polyemo.corpora.batch import prepare_all  # noqa: E402  (needs RECIPES above)

__all__ += ["prepare_all"]
