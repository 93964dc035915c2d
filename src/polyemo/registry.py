"""Name -> implementation registries for corpora, encoders, heads and losses.

Each registry lives in its stage's subpackage; adding an entry is adding one file with a
``@REGISTRY.register`` call. A lookup first imports the module named like the entry (the head
``linear`` from ``heads/linear.py``), so using one entry does not import every other one's
dependencies (scikit-learn for the classical heads, openSMILE...); a name found nowhere else,
``names()`` and ``in`` import every module of the package once.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (classes or functions) of one kind."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name.lower()
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[key] = obj
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return obj

        return decorator

    def _load_package(self) -> None:
        # Import every module of the stage's package once, so their decorators run.
        if self._loaded or self._package is None:
            return
        self._loaded = True
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self._package}.{module.name}")

    def _load_module_named(self, key: str) -> None:
        # The module of the same name usually holds the entry: import it alone first
        # (for a name like "whisper-base", the module named by its leading word).
        if not key.isidentifier():
            key = re.split(r"[^A-Za-z0-9_]", key, maxsplit=1)[0]
        if self._loaded or self._package is None or not key.isidentifier():
            return
        module = f"{self._package}.{key}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise

    def get(self, name: str) -> T:
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            self._load_module_named(key)
            key = self._aliases.get(key, key)
        if key not in self._entries:
            self._load_package()
            key = self._aliases.get(name.lower(), name.lower())
        if key not in self._entries:
            known = ", ".join(self.names())
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[key]

    def __contains__(self, name: str) -> bool:
        self._load_package()
        key = name.lower()
        return key in self._entries or key in self._aliases

    def names(self) -> list[str]:
        self._load_package()
        return sorted(self._entries)
