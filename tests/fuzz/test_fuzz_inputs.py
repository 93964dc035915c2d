"""Property-based tests (hypothesis) of the readers that take outside input (issue 15): the audio
loader, list and manifest tables, bundles. Every case ends in a correct result or a clear error
naming the input, within the memory bound and the deadline (no hang)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases as fz  # noqa: E402

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=10), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=fz.audio_bytes, name=fz.names)
def test_audio_loader_gives_a_result_or_a_clear_error(data, name):
    fz.check_audio(data, name)


@pytest.mark.parametrize("seed", sorted(p.name for p in fz.cases.SEED_DIR.iterdir()))
def test_every_seed_file_through_the_fuzz_contract(seed):
    fz.check_audio((fz.cases.SEED_DIR / seed).read_bytes(), seed)


@FUZZ
@given(suffix=st.sampled_from([".csv", ".tsv", ".txt", ".parquet"]),
       content=st.one_of(fz.table_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=300)))
def test_list_tables_give_rows_or_a_clear_error(suffix, content):
    with tempfile.TemporaryDirectory() as folder:
        fz.check_list(Path(folder), suffix, content)


@FUZZ
@given(suffix=st.sampled_from([".csv", ".parquet", ".tsv"]),
       content=st.one_of(fz.table_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=300)))
def test_manifests_load_or_raise_value_errors(suffix, content):
    with tempfile.TemporaryDirectory() as folder:
        fz.check_manifest(Path(folder), suffix, content)


@pytest.fixture(scope="module")
def pristine_bundle(tmp_path_factory) -> Path:
    return fz.tiny_bundle(tmp_path_factory.mktemp("fuzz") / "bundle")


BUNDLE_FILES = ["manifest.json", "config.json", "labels.json", "head.safetensors", "normalisation.safetensors",
                "metrics.json", "MODEL_CARD.md"]


@FUZZ
@given(target=st.sampled_from(BUNDLE_FILES), mutation=st.sampled_from(["bytes", "json", "truncate", "delete"]),
       payload=st.binary(max_size=200), value=fz.json_values, rehash=st.booleans(), at=st.integers(0, 10**6))
def test_damaged_bundles_are_read_or_refused_by_name(pristine_bundle, target, mutation, payload, value, rehash, at):
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "bundle"
        shutil.copytree(pristine_bundle, bundle)
        fz.damage_bundle(bundle, target, mutation, payload, value, rehash, at)


def test_the_pristine_bundle_reads(pristine_bundle):
    assert fz.check_bundle(pristine_bundle) == "ok"
