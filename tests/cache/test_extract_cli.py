"""``polyemo extract`` with the real eGeMAPS encoder on a few EmoDB files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import soundfile as sf
from typer.testing import CliRunner

from polyemo.audio import load_audio
from polyemo.cache import features
from polyemo.cli import app
from polyemo.encoders import get_encoder


def test_extract_command_fills_and_reuses_the_cache(prepared_manifest, tmp_path):
    manifest = prepared_manifest("emodb").sort_values("utt_id").iloc[:6]
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000)
    bad_row = pd.DataFrame({"utt_id": ["bad/silent"], "path": [str(silent)]})
    manifest_path = tmp_path / "manifest.csv"
    pd.concat([manifest, bad_row], ignore_index=True).to_csv(manifest_path, index=False)
    cache = tmp_path / "cache"
    failures = tmp_path / "failures.csv"
    args = ["extract", str(manifest_path), "--encoder", "egemaps", "--cache-dir", str(cache),
            "--failures", str(failures), "--no-progress"]

    runner = CliRunner()
    first = runner.invoke(app, [*args, "--batch-seconds", "5"])
    assert first.exit_code == 0, first.output
    assert "computed 6, reused 0" in first.output and "1 rows failed" in first.output
    assert pd.read_csv(failures)["utt_id"].tolist() == ["bad/silent"]
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "computed 0, reused 6" in second.output

    result = features(manifest, "egemaps", cache_dir=cache, progress=False)
    assert result.computed == 0 and result.array.shape == (6, 1, 88)
    direct = get_encoder("egemaps").pooled([load_audio(p) for p in manifest["path"]])
    np.testing.assert_allclose(result.array, direct, rtol=1e-6)

    bad = runner.invoke(app, ["extract", str(manifest_path), "--encoder", "egemaps", "--layers", "x"])
    assert bad.exit_code != 0 and "comma-separated integers" in bad.output


def test_cache_verify_names_a_corrupt_shard_and_gc_frees_it(prepared_manifest, tmp_path):
    manifest = prepared_manifest("emodb").sort_values("utt_id").iloc[:3]
    cache = tmp_path / "cache"
    result = features(manifest, "egemaps", cache_dir=cache, progress=False)
    runner = CliRunner()
    clean = runner.invoke(app, ["cache", "verify", "--cache-dir", str(cache)])
    assert clean.exit_code == 0 and "3 recordings pooled" in clean.output and "ok" in clean.output, clean.output
    (shard,) = (result.store_dir / "pooled").glob("*.safetensors")
    data = bytearray(shard.read_bytes())
    data[-2] ^= 0x10
    shard.write_bytes(bytes(data))
    broken = runner.invoke(app, ["cache", "verify", "--cache-dir", str(cache)])
    assert broken.exit_code == 1 and shard.name in broken.output and "checksum mismatch" in broken.output
    collected = runner.invoke(app, ["cache", "gc", "--cache-dir", str(cache)])
    assert collected.exit_code == 0 and "removed 1 files" in collected.output, collected.output
    again = features(manifest, "egemaps", cache_dir=cache, progress=False)  # recomputed, right numbers
    assert again.computed == 3
    np.testing.assert_array_equal(again.array, result.array)
