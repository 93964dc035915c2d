"""Fuzzing summary (issue 15): the property checks of ``tests/fuzz/fuzz_cases.py`` with many more
examples than the test suite runs, a fresh random seed each run, and the outcome of every case
counted; writes ``benchmarks/results/fuzzing.md``.

    python benchmarks/fuzz.py                       # default example counts
    python benchmarks/fuzz.py --scale 0.2 --no-uploads

The upload target serves the tests' tiny real model (whisper-tiny.en + a linear head trained on
24 EmoDB clips; needs the shared corpora) through FastAPI's TestClient.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
sys.path.insert(0, str(ROOT / "tests" / "serve"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fuzz_cases as fz  # noqa: E402

TARGETS = {"audio": 3000, "lists": 600, "manifests": 600, "bundles": 400, "uploads": 300}


def run_target(name: str, examples: int, seed: int, body, strategies: dict) -> dict:
    outcomes: Counter[str] = Counter()
    failure = None
    durations: list[float] = []

    @settings(max_examples=examples, deadline=timedelta(seconds=30), database=None,
              suppress_health_check=list(HealthCheck))
    @given(**strategies)
    def prop(**kwargs):
        started = time.perf_counter()
        outcomes[str(body(**kwargs))] += 1
        durations.append(time.perf_counter() - started)

    random.seed(seed)
    started = time.perf_counter()
    try:
        from hypothesis import seed as hseed

        hseed(seed)(prop)()
    except Exception as exc:  # noqa: BLE001 - a broken property is what we report
        failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:1500]
    return {"target": name, "cases": sum(outcomes.values()), "failures": 0 if failure is None else 1,
            "outcomes": dict(outcomes.most_common()), "seconds": round(time.perf_counter() - started, 1),
            "slowest_s": round(max(durations), 3) if durations else None, "failure": failure}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every target's example count")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--no-uploads", action="store_true", help="skip the server target (needs the corpora)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "fuzzing.md")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    counts = {k: max(1, int(v * args.scale)) for k, v in TARGETS.items()}
    work = Path(tempfile.mkdtemp(prefix="polyemo-fuzz-"))
    results = []
    try:
        results.append(run_target("audio loader (read_audio)", counts["audio"], seed, fz.check_audio,
                                  {"data": fz.audio_bytes, "name": fz.names}))

        def table(check):
            def body(suffix, content):
                with tempfile.TemporaryDirectory(dir=work) as folder:
                    return check(Path(folder), suffix, content)
            return body

        content = st.one_of(fz.table_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=300))
        results.append(run_target("list tables (collect_inputs)", counts["lists"], seed, table(fz.check_list),
                                  {"suffix": st.sampled_from([".csv", ".tsv", ".txt", ".parquet"]), "content": content}))
        results.append(run_target("manifests (manifest.load)", counts["manifests"], seed, table(fz.check_manifest),
                                  {"suffix": st.sampled_from([".csv", ".tsv", ".parquet"]), "content": content}))
        pristine = fz.tiny_bundle(work / "pristine")
        results.append(run_target("bundles (read_bundle + head + normaliser)", counts["bundles"], seed,
                                  lambda **kw: _damaged_bundle(pristine, work, **kw),
                                  {"target": st.sampled_from(sorted(p.name for p in pristine.iterdir())),
                                   "mutation": st.sampled_from(["bytes", "json", "truncate", "delete"]),
                                   "payload": st.binary(max_size=200), "value": fz.json_values,
                                   "rehash": st.booleans(), "at": st.integers(0, 10**6)}))
        if not args.no_uploads:
            results.append(_uploads(counts["uploads"], seed, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(args.output, results, seed, args.scale)
    print(args.output.read_text())
    sys.exit(1 if any(r["failures"] for r in results) else 0)


def _damaged_bundle(pristine: Path, work: Path, target, mutation, payload, value, rehash, at) -> str:
    with tempfile.TemporaryDirectory(dir=work) as folder:
        bundle = Path(folder) / "bundle"
        shutil.copytree(pristine, bundle)
        return fz.damage_bundle(bundle, target, mutation, payload, value, rehash, at)


def _uploads(examples: int, seed: int, work: Path) -> dict:
    import logging

    from fastapi.testclient import TestClient

    import polyemo_tiny_bundle as tiny
    from polyemo.serve import create_app

    corpora = Path(os.environ.get("POLYEMO_SHARED_CORPORA", ROOT.parent / "shared" / "corpora"))
    recogniser = tiny.recogniser(tiny.shared_bundle(work, corpora))
    logging.getLogger("polyemo.serve").setLevel(logging.CRITICAL)  # refusals are the point here
    with TestClient(create_app(recogniser, tiny.SERVE_LIMITS), raise_server_exceptions=False) as client:
        result = run_target("upload endpoint (POST /v1/predict)", examples, seed,
                            lambda **kw: fz.check_upload(client, **kw),
                            {"body": fz.audio_bytes, "name": fz.names,
                             "content_type": st.one_of(st.none(), fz.content_types), "multipart": st.booleans()})
        healthy = client.get("/health").json()["status"] == "ok"
    if not healthy:
        result["failures"] += 1
        result["failure"] = (result["failure"] or "") + " server unhealthy after fuzzing"
    return result


def write_report(path: Path, results: list[dict], seed: int, scale: float) -> None:
    from polyemo.io import write_text

    total = sum(r["cases"] for r in results)
    failures = sum(r["failures"] for r in results)
    lines = [
        "# Fuzzing summary (issue 15)",
        "",
        f"`python benchmarks/fuzz.py{'' if scale == 1 else f' --scale {scale:g}'} --seed {seed}` reproduces this run "
        f"({platform.machine()}, {os.cpu_count()} CPUs, hypothesis random generation with shrinking). "
        "Each case must end in a correct result or a clear error naming the input (AudioError with a known code, "
        "ValueError/FileNotFoundError from the readers, BundleError, a JSON 4xx/503 with a request id from the "
        f"server, never a 500), allocate under {fz.MEMORY_BOUND // 2**20} MiB (tracemalloc; numpy arrays included) "
        "and finish within the 30 s deadline (no hang). The checks are `tests/fuzz/fuzz_cases.py`; the test suite "
        "runs the same properties with fewer examples (`tests/fuzz`, `tests/serve/test_fuzz_uploads.py`).",
        "",
        f"**{total} cases tried, {failures} failures.**",
        "",
        "| target | cases | failures | slowest case (s) | wall (s) | outcomes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        outcomes = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
        lines.append(f"| {r['target']} | {r['cases']} | {r['failures']} | {r['slowest_s']} | {r['seconds']} | {outcomes} |")
    for r in results:
        if r["failure"]:
            lines += ["", f"## Failure: {r['target']}", "", "```", r["failure"], "```"]
    lines += ["", "Inputs: random bytes; seed files (`tests/data/bad/`, valid WAV/FLAC/OGG) with bit flips, byte "
              "changes, cuts, insertions, duplications and truncation; WAV headers with any rate (0 to 2^32-1), "
              "channel count (0 to 65535), sample size and claimed length; float WAVs with NaN/inf/huge samples; "
              "names with unicode, control characters, NUL, path traversal and wrong extensions; list/manifest "
              "files of random text, CSV-like rows and bytes; bundle folders with a file's bytes replaced, "
              "truncated, deleted or its JSON values replaced by random JSON (with and without re-hashing the "
              "manifest); uploads as raw bodies or hand-built multipart with any content type.", "",
              "Damaged Parquet/CSV tables: `polyemo.io.read_table` turns pandas'/pyarrow's parser errors into a "
              "ValueError naming the file (found by this fuzzing; `tests/test_io.py`).", ""]
    write_text(path, "\n".join(lines))


if __name__ == "__main__":
    main()
