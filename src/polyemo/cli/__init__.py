"""``polyemo`` command line. Each module here adds its commands to :data:`app`; every
command is a thin layer over a documented Python function."""

from __future__ import annotations

import importlib
import pkgutil

from polyemo.cli.app import app

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("app",) and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    app()


__all__ = ["app", "main"]
