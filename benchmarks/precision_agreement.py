"""Do fp32 and bf16 encoder features give the default model the same answers? All of EmoDB.

    nice -n 10 python benchmarks/precision_agreement.py [--corpora-root ../shared/corpora] [--limit N]

Runs the packaged default model (trained on fp32 whisper-base features) over every EmoDB
recording with the encoder at each precision (default fp32 and bf16; ``--precisions
fp32,bf16,int8`` adds int8), and writes benchmarks/results/precision_agreement.{md,json}:
the share of recordings whose label is the same as with fp32, the largest and mean absolute
probability difference, and the seconds (and x real time) each precision took, with the
CPU model, its flags and whether bf16 is native there. On a CPU without AVX512-BF16/AMX,
bf16 is emulated and several times slower than fp32, which is why ``auto`` picks fp32 there.
The CI test (tests/test_bundle_precision.py) checks the same on 24 of these recordings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> dict:
    import torch

    from polyemo.encoders.precision import cpu_bf16_report, resolve_precision

    report = cpu_bf16_report()
    return {"cpu": report["cpu"], "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "torch_capability": report["torch_capability"], "flags": report["flags"],
            "native_bf16": report["native_bf16"], "native_bf16_source": report["source"],
            "auto_resolves_to": resolve_precision("auto"), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora-root", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated; the first is the reference")
    parser.add_argument("--limit", type=int, default=None, help="only the first N recordings (a quick check)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "precision_agreement.md")
    parser.add_argument("--note", default="", help="conditions of the run, printed under the table (e.g. a shared machine)")
    args = parser.parse_args()

    from polyemo.predict import load_model

    corpus = args.corpora_root / "emodb"
    manifest = pd.read_csv(corpus / "manifest.csv", dtype={"speaker": str}).sort_values("path")
    if args.limit:
        manifest = manifest.head(args.limit)
    paths = [str(corpus / p) for p in manifest["path"]]
    audio_seconds = float(manifest["duration_s"].sum())
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]

    runs: dict[str, dict] = {}
    for precision in precisions:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "bf16 is emulated": measured here anyway
            recogniser = load_model(precision=precision, batch_size=args.batch_size)
        started = time.perf_counter()
        predictions = recogniser.predict(paths)
        seconds = time.perf_counter() - started
        runs[precision] = {
            "seconds": seconds, "x_real_time": audio_seconds / seconds,
            "identity_precision": recogniser.encoder.identity.precision,
            "labels": np.array([p.label for p in predictions]),
            "probabilities": np.array([[p.probabilities[c] for c in recogniser.classes] for p in predictions]),
        }
        print(f"{precision}: {len(paths)} recordings ({audio_seconds:.0f} s of audio) in {seconds:.1f} s "
              f"= {audio_seconds / seconds:.1f}x real time", flush=True)

    reference = precisions[0]
    rows = []
    for precision in precisions:
        run, ref = runs[precision], runs[reference]
        difference = np.abs(run["probabilities"] - ref["probabilities"])
        changed = np.flatnonzero(run["labels"] != ref["labels"])
        rows.append({
            "precision": precision, "seconds": round(run["seconds"], 1), "x_real_time": round(run["x_real_time"], 1),
            "agreement": float(1 - len(changed) / len(paths)), "changed": len(changed),
            "max_probability_difference": float(difference.max()), "mean_probability_difference": float(difference.mean()),
            "changed_recordings": [f"{Path(paths[i]).stem}: {ref['labels'][i]} -> {run['labels'][i]}" for i in changed],
        })
    info = machine()
    result = {"reference": reference, "recordings": len(paths), "audio_seconds": round(audio_seconds, 1),
              "machine": info, "rows": rows, "note": args.note}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    lines = [
        "# fp32 vs bf16 encoder features through the default model (EmoDB)", "",
        f"`python benchmarks/precision_agreement.py`: the packaged default model (trained on fp32 whisper-base "
        f"features) on {len(paths)} EmoDB recordings ({audio_seconds:.0f} s of audio), the encoder at each "
        f"precision; agreement and probability differences against {reference}.", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} with {info['torch_threads']} threads, "
        f"capability {info['torch_capability']}; flags {', '.join(info['flags']) or 'none of interest'}; "
        f"native bf16: {'yes' if info['native_bf16'] else 'no'} (from {info['native_bf16_source']}), so "
        f"`auto` runs {info['auto_resolves_to']}.", "",
        "| precision | same label as " + reference + " | max abs. probability difference | mean abs. difference "
        "| seconds | x real time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['precision']} | {100 * row['agreement']:.1f} % ({len(paths) - row['changed']}/{len(paths)}) "
                     f"| {row['max_probability_difference']:.4f} | {row['mean_probability_difference']:.5f} "
                     f"| {row['seconds']:.1f} | {row['x_real_time']:.1f} |")
    lines.append("")
    for row in rows:
        if row["changed_recordings"]:
            lines.append(f"Labels changed with {row['precision']}: {'; '.join(row['changed_recordings'])}.")
    lines += ["", "Probabilities are the model's seven ekman7 class probabilities; differences are over all "
              "recordings and classes. Seconds include decoding and the model head (the whole `predict`).", ""]
    if args.note:
        lines += [f"Conditions: {args.note}", ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
