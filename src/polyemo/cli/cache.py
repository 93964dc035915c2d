"""``polyemo cache verify`` / ``polyemo cache gc``: check and tidy the feature cache
(see :meth:`polyemo.cache.FeatureStore.verify` and :meth:`~polyemo.cache.FeatureStore.gc`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli.app import app

cache_app = typer.Typer(help="Check and tidy the feature cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

_ROOT = typer.Option(None, "--cache-dir", help="feature cache root (default: $POLYEMO_CACHE/features)")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def _stores(cache_dir: Optional[Path], store: Optional[str]):
    from polyemo.cache.store import open_stores

    stores = open_stores(cache_dir)
    if store:
        stores = [s for s in stores if s.directory.name.startswith(store)]
        if not stores:
            raise typer.BadParameter(f"no feature store named {store!r}*", param_hint="STORE")
    return stores


@cache_app.command("verify")
def verify(
    store: Optional[str] = typer.Argument(None, help="only stores whose folder name starts with this, e.g. whisper-base"),
    cache_dir: Optional[Path] = _ROOT,
    repair: bool = typer.Option(True, help="quarantine bad shards so the next run recomputes their rows"),
) -> None:
    """Check every shard of the cache (readable, shapes, checksum); exit code 1 if any is bad."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    bad = 0
    for feature_store in _stores(cache_dir, store):
        report = feature_store.verify(repair=repair)
        bad += len(report["bad"])
        status = "[green]ok[/green]" if not report["bad"] else f"[red]{len(report['bad'])} bad[/red]"
        console.print(f"{feature_store.directory.name}: {report['shards']} shards, {_size(report['bytes'])}, "
                      f"{report['pooled']} recordings pooled, {report['frame_tensors']} frame tensors: {status}")
        for item in report["bad"]:
            console.print(f"  {item['file']}: {item['problem']}" + (" (quarantined)" if repair else ""))
    if bad:
        raise typer.Exit(1)


@cache_app.command("gc")
def gc(
    store: Optional[str] = typer.Argument(None, help="only stores whose folder name starts with this"),
    cache_dir: Optional[Path] = _ROOT,
) -> None:
    """Delete quarantined shards, leftovers of killed writers and duplicate shards."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    total = 0
    for feature_store in _stores(cache_dir, store):
        report = feature_store.gc()
        total += report["bytes_freed"]
        console.print(f"{feature_store.directory.name}: removed {len(report['removed'])} files, "
                      f"{_size(report['bytes_freed'])}")
    console.print(f"freed {_size(total)}")
