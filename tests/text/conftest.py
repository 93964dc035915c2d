"""Fixtures of the text tests: the packaged Whisper transcriber, a tiny CTC model, small manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello.wav"
#: what examples/README.md says hello.wav speaks
HELLO_TEXT = "Hello! This is polyemo, a toolkit for recognising emotions in speech."


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the Hugging Face hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def whisper_transcriber():
    from polyemo.encoders.asr import Transcriber

    return Transcriber("whisper-base", language="manifest", beams=1)


@pytest.fixture(scope="session")
def tiny_ctc(tmp_path_factory) -> Path:
    """A random-weight wav2vec2 CTC model with its own character tokenizer, saved as a folder."""
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    root = tmp_path_factory.mktemp("tiny_ctc")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    (root / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(root / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, conv_dim=(32,) * 7,
                            conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                            vocab_size=len(vocab), pad_token_id=0)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(root / "model")
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(root / "model")
    return root / "model"


def manifest_of(paths: list[Path], texts: list[str | None], languages: list[str | None]) -> pd.DataFrame:
    from polyemo.audio import content_hash
    from polyemo.manifest import normalise_frame

    rows = [{"utt_id": f"u{i}", "path": str(p), "corpus": "test", "language": lang, "speaker": f"test_s{i}",
             "gender": "NA", "label_raw": "neutral", "label": "neutral", "duration": 1.0, "text": text,
             "content_hash": content_hash(p)} for i, (p, text, lang) in enumerate(zip(paths, texts, languages))]
    return normalise_frame(pd.DataFrame(rows))
