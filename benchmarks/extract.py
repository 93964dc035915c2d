"""Feature extraction speed: x real time per encoder, cold cache, on the shared corpora.

For each encoder setting this prepares the shared corpora (optionally only the first
``--limit`` files of each, by utt_id), builds the encoder, and runs
:func:`polyemo.cache.features` into a fresh temporary cache, so nothing is reused. x real
time is seconds of audio encoded per wall-clock second of the extraction (audio decoding,
encoding and cache writes; encoder loading is reported separately). Results go to
``benchmarks/results/extract.md`` and ``extract.csv`` (with ``--tag``, ``extract-<tag>.*``).

    python benchmarks/extract.py --limit 40            # a quick sample
    python benchmarks/extract.py --encoders egemaps,whisper-base-bf16
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy+torch on 2 cores are 3x slower otherwise

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLYEMO_SHARED_CORPORA", REPO.parent / "shared" / "corpora"))
CORPORA = ("emodb", "ravdess", "savee", "emovo", "urdu", "baved")


@dataclass
class Setting:
    label: str
    encoder: str
    options: dict[str, Any] = field(default_factory=dict)
    target: float | None = None  # x real time the project aims for


SETTINGS = [
    Setting("whisper-base-bf16", "whisper-base", {"precision": "bf16", "trim": True}, 150.0),
    Setting("whisper-base-fp32", "whisper-base", {"precision": "fp32", "trim": True}),
    Setting("whisper-tiny.en-bf16", "whisper-tiny.en", {"precision": "bf16", "trim": True}, 300.0),
    Setting("whisper-tiny.en-fp32", "whisper-tiny.en", {"precision": "fp32", "trim": True}),
    Setting("egemaps", "egemaps", {}, 50.0),
]


def load_corpora(names: list[str], limit: int | None) -> pd.DataFrame:
    from polyemo.corpora import prepare

    frames = []
    for name in names:
        manifest, failures = prepare(name, SHARED / name, workers=2, show_progress=False)
        if len(failures):
            print(f"{name}: {len(failures)} files failed to prepare", file=sys.stderr)
        manifest = manifest.sort_values("utt_id")
        frames.append(manifest.iloc[:limit] if limit else manifest)
    return pd.concat(frames, ignore_index=True)


def measure(setting: Setting, manifest: pd.DataFrame, workers: int, batch_seconds: float) -> dict[str, Any]:
    import torch

    from polyemo.cache import features
    from polyemo.encoders import get_encoder

    started = time.perf_counter()
    encoder = get_encoder(setting.encoder, **setting.options)
    load_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="polyemo-bench-") as cache_dir:
        source: Any = encoder if workers == 1 else setting.encoder
        options = {} if workers == 1 else {"encoder_options": setting.options}
        result = features(manifest, source, cache_dir=cache_dir, workers=workers,
                          batch_seconds=batch_seconds, progress=True, **options)
    speed = result.x_real_time
    return {
        "setting": setting.label,
        "encoder": setting.encoder,
        "options": ",".join(f"{k}={v}" for k, v in setting.options.items()),
        "files": int(result.computed),
        "failed": int(result.failed),
        "audio_s": round(result.audio_seconds, 1),
        "wall_s": round(result.wall_seconds, 2),
        "x_real_time": round(speed, 1),
        "target": setting.target,
        "meets_target": None if setting.target is None else bool(speed >= setting.target),
        "encoder_load_s": round(load_seconds, 2),
        "workers": workers,
        "torch_threads": torch.get_num_threads(),
        "batch_seconds": batch_seconds,
    }


def write_results(rows: list[dict[str, Any]], out_dir: Path, tag: str | None, context: dict[str, Any]) -> list[Path]:
    from polyemo.io import write_table, write_text

    table = pd.DataFrame(rows)
    stem = "extract" + (f"-{tag}" if tag else "")
    csv_path = out_dir / f"{stem}.csv"
    md_path = out_dir / f"{stem}.md"
    write_table(csv_path, table)
    lines = [
        "# Feature extraction speed (cold cache)",
        "",
        *(f"- {key}: {value}" for key, value in context.items()),
        "",
        "| setting | files | audio s | wall s | x real time | target | met | encoder load s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = "" if row["target"] is None else f">= {row['target']:.0f}x"
        met = "" if row["meets_target"] is None else ("yes" if row["meets_target"] else "NO")
        lines.append(
            f"| {row['setting']} | {row['files']} | {row['audio_s']} | {row['wall_s']} | "
            f"{row['x_real_time']} | {target} | {met} | {row['encoder_load_s']} |"
        )
    write_text(md_path, "\n".join(lines) + "\n")
    return [md_path, csv_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default=",".join(s.label for s in SETTINGS),
                        help=f"comma-separated settings of: {', '.join(s.label for s in SETTINGS)}")
    parser.add_argument("--corpora", default=",".join(CORPORA), help="comma-separated shared corpora")
    parser.add_argument("--limit", type=int, default=None, help="files per corpus (first by utt_id); default all")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--tag", default=None, help="suffix of the result files")
    args = parser.parse_args(argv)

    by_label = {s.label: s for s in SETTINGS}
    chosen = [by_label[label] for label in args.encoders.split(",") if label]  # KeyError names a typo
    manifest = load_corpora([c for c in args.corpora.split(",") if c], args.limit)
    print(f"{len(manifest)} files, {manifest['duration'].sum() / 60:.1f} min of audio", file=sys.stderr)
    load_before = os.getloadavg()[0]
    rows = []
    for setting in chosen:
        row = measure(setting, manifest, args.workers, args.batch_seconds)
        print(row, file=sys.stderr)
        rows.append(row)
    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "corpora": args.corpora,
        "files per corpus": args.limit or "all",
        "total files": len(manifest),
        "audio minutes": round(float(manifest["duration"].sum()) / 60, 1),
        # Other work on the machine slows every setting; a load near the core count is idle.
        "load average (1 min) before / after": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
        "x real time": "audio seconds encoded / wall seconds of extraction (decode + encode + cache write)",
    }
    for path in write_results(rows, args.out, args.tag, context):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
