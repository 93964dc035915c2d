"""Bounded load test of ``polyemo serve`` on this machine (127.0.0.1 only).

Starts the server with a bundle (or uses one already running on a loopback address), sends
``--requests`` uploads of a ``--seconds`` clip all at once (httpx, async), and reports errors,
median and p95 latency and throughput. Nothing is sent anywhere but 127.0.0.1.

    python benchmarks/serve_load.py --model path/to/bundle --clip some.flac
    python benchmarks/serve_load.py --url http://127.0.0.1:8000      # a running server
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import soundfile as sf

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def clip_bytes(clip: Path | None, seconds: float) -> bytes:
    """A WAV of exactly ``seconds``: the clip repeated (real speech), or the default EmoDB clips."""
    from polyemo.audio import load_audio

    if clip is None:
        corpora = Path(os.environ.get("POLYEMO_SHARED_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))
        sources = sorted((corpora / "emodb" / "audio").glob("03a0*.flac"))[:4]
        if not sources:
            raise SystemExit("no --clip given and the shared EmoDB corpus is not found (set POLYEMO_SHARED_CORPORA)")
    else:
        sources = [clip]
    wave = np.concatenate([load_audio(s) for s in sources])
    target = int(seconds * 16000)
    wave = np.tile(wave, target // wave.size + 1)[:target]
    buffer = io.BytesIO()
    sf.write(buffer, wave, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path | None, port: int, max_batch: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "polyemo", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--max-batch", str(max_batch), "--log-level", "warning"]
    if model is not None:
        command += ["--model", str(model)]
    return subprocess.Popen(command)


def wait_healthy(url: str, process: subprocess.Popen | None, timeout: float = 300.0) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}")
        try:
            response = httpx.get(f"{url}/health", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} not healthy after {timeout:.0f} s")


async def fire(url: str, data: bytes, requests: int, timeout: float) -> tuple[list[float], list[str], float]:
    import httpx

    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def one(i: int) -> tuple[float, str | None]:
            start = time.perf_counter()
            try:
                response = await client.post("/v1/predict", files={"file": (f"load-{i}.wav", data, "audio/wav")})
                error = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            return time.perf_counter() - start, error

        start = time.perf_counter()
        results = await asyncio.gather(*[one(i) for i in range(requests)])
        wall = time.perf_counter() - start
    latencies = [t for t, e in results if e is None]
    errors = [e for _, e in results if e is not None]
    return latencies, errors, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="bundle to serve (default: the packaged model)")
    parser.add_argument("--url", help="use a running server at this loopback URL instead of starting one")
    parser.add_argument("--clip", type=Path, help="audio to send (repeated or cut to --seconds)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--requests", type=int, default=100, help="concurrent requests (at most 500)")
    parser.add_argument("--max-batch", type=int, default=8, help="server micro-batch size (when started here)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if not 1 <= args.requests <= 500:
        raise SystemExit("--requests must be between 1 and 500 (this is a bounded test)")

    process = None
    if args.url:
        url = args.url.rstrip("/")
        if urlparse(url).hostname not in LOOPBACK:
            raise SystemExit(f"{url}: only loopback addresses (127.0.0.1, localhost) are allowed")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_server(args.model, port, args.max_batch)
    try:
        health = wait_healthy(url, process)
        data = clip_bytes(args.clip, args.seconds)
        asyncio.run(fire(url, data, 2, args.timeout))  # warm-up, not counted
        latencies, errors, wall = asyncio.run(fire(url, data, args.requests, args.timeout))
        import httpx

        after = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)

    result = {
        "requests": args.requests,
        "clip_seconds": args.seconds,
        "errors": len(errors),
        "median_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "wall_s": round(wall, 3),
        "requests_per_s": round(args.requests / wall, 2),
        "audio_seconds_per_s": round(args.requests * args.seconds / wall, 2),
        "batches_run": after.get("batches_run"),
        "requests_run": after.get("requests_run"),
        "model": health.get("model"),
        "encoder": health.get("encoder"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(result, indent=2))
    if errors:
        print("first errors:", *errors[:5], sep="\n  ", file=sys.stderr)
    if args.output:
        from polyemo.io import write_json

        write_json(args.output, result)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
