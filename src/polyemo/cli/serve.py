"""``polyemo serve``: HTTP API and web page for a model bundle (see :func:`polyemo.serve.serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polyemo.cli.app import app


@app.command()
def serve(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="model bundle folder (default: the packaged model)"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0 exposes it to the network)"),
    port: int = typer.Option(8000, min=1, max=65535),
    max_upload_mb: float = typer.Option(50.0, min=0.001, help="largest accepted upload in MB"),
    max_seconds: float = typer.Option(600.0, min=0.1, help="longest accepted audio in seconds"),
    max_batch: int = typer.Option(8, min=1, help="requests run through the model together"),
    max_decodes: int = typer.Option(2, min=1, help="uploads decoded at the same time (bounds memory)"),
    timeout: float = typer.Option(120.0, min=0.1, help="seconds a request may take from its arrival (then 408/503)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
    precision: str = typer.Option("auto", help="encoder precision: auto (bf16 where the hardware computes it "
                                  "natively, else fp32), fp32, bf16 or int8; the model reads any of them"),
) -> None:
    """Serve POST /v1/predict, GET /v1/labels, GET /health, the web page at / and docs at /docs."""
    from rich.console import Console
    from rich.markup import escape

    from polyemo.bundle import BundleError
    from polyemo.predict import load_model
    from polyemo.serve import ServeConfig
    from polyemo.serve import serve as run_server

    config = ServeConfig(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_duration_seconds=max_seconds,
                         max_batch=max_batch, max_concurrent_decodes=max_decodes, request_timeout_seconds=timeout)
    try:
        # Load before binding the port, so a bad bundle fails with its message, not a server trace.
        recogniser = load_model(model, precision=precision)
    except BundleError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    Console(stderr=True, soft_wrap=True).print(f"serving {recogniser.name} on http://{host}:{port}/ (API docs at /docs)")
    run_server(recogniser, host=host, port=port, config=config, log_level=log_level)
