"""Text encoders: tiny random BERT / RoBERTa by path, Whisper's decoder states, the text store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyemo.cache.text_store import text_features
from polyemo.encoders.text import TEXT_ENCODERS, TransformersTextEncoder, WhisperDecoderText, get_text_encoder

WORDS = "the kids are talking by door dogs sitting der lappen liegt auf dem eisschrank hello world".split()


@pytest.fixture(scope="module")
def tiny_text_models(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast, RobertaConfig, RobertaModel

    root = tmp_path_factory.mktemp("tiny_text")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(str(vocab))
    small = dict(vocab_size=len(WORDS) + 7, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=64)
    paths = {}
    for name, model in (("bert", BertModel(BertConfig(**small))),
                        ("roberta", RobertaModel(RobertaConfig(**small, pad_token_id=0)))):
        torch.manual_seed(0)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_transformers_text_encoder_layers_tokens_pooling(tiny_text_models, kind):
    encoder = get_text_encoder(str(tiny_text_models[kind]))
    assert isinstance(encoder, TransformersTextEncoder)
    assert (encoder.num_layers, encoder.dim) == (3, 16)
    texts = ["hello world", "the kids are talking by the door.", ""]
    tokens = encoder.tokens(texts)
    # [CLS] hello world [SEP]; [CLS] + 8 tokens + [SEP]; [CLS] [SEP]
    assert [t.shape for t in tokens] == [(3, 4, 16), (3, 10, 16), (3, 2, 16)]
    pooled = encoder.pooled(texts)
    assert pooled.shape == (3, 3, 16)
    np.testing.assert_allclose(pooled[1], tokens[1].mean(axis=1), rtol=1e-6)
    # padding in a batch never changes a text's features
    alone = encoder.pooled(["hello world"])
    np.testing.assert_allclose(alone[0], pooled[0], atol=1e-5)
    assert not np.allclose(pooled[0], pooled[1])
    identity = encoder.identity.as_dict()
    assert identity["name"] == f"text:local:{kind}" and len(identity["weights_hash"]) == 16


def test_text_store_caches_by_text(tiny_text_models, tmp_path):
    encoder = get_text_encoder(str(tiny_text_models["bert"]))
    texts = ["hello world", "dogs are sitting by the door", "hello   world"]  # the third is the first, re-spaced
    first, counts = text_features(texts, encoder, cache_dir=tmp_path)
    assert counts == {"cached": 0, "computed": 2}
    np.testing.assert_array_equal(first[0], first[2])
    again, counts = text_features(texts[::-1] + ["der lappen"], encoder, cache_dir=tmp_path)
    assert counts == {"cached": 2, "computed": 1}
    np.testing.assert_array_equal(again[0], first[2])
    tokens, counts = text_features(texts[:1], encoder, kind="tokens", cache_dir=tmp_path)
    assert counts["computed"] == 1 and tokens[0].dtype == np.float16 and tokens[0].shape == (3, 4, 16)
    entries = list((tmp_path / "text").rglob("*.npy"))
    assert len(entries) == 4 and not list((tmp_path / "text").rglob(".*"))  # no temporary files left
    with pytest.raises(ValueError, match="kind"):
        text_features(texts, encoder, kind="frames", cache_dir=tmp_path)


def test_whisper_decoder_text_offline_default(tmp_path):
    assert "whisper-decoder" in TEXT_ENCODERS
    encoder = get_text_encoder("whisper-decoder")
    assert isinstance(encoder, WhisperDecoderText) and encoder.uses_language
    assert (encoder.num_layers, encoder.dim) == (7, 512)  # whisper-base: 6 decoder layers + embeddings
    texts = ["Kids are talking by the door.", "Der Lappen liegt auf dem Eisschrank.", "Kids are talking by the door."]
    tokens = encoder.tokens(texts, ["en", "de", "de"])
    assert tokens[0].shape[0] == 7 and tokens[0].shape[1] >= 7  # the text's tokens + <|endoftext|>
    pooled = np.stack([encoder.pool(t) for t in tokens])
    assert np.isfinite(pooled).all()
    assert not np.allclose(pooled[0], pooled[2], atol=1e-3)  # the language token changes the states
    alone = encoder.pooled(texts[:1], ["en"])
    np.testing.assert_allclose(alone[0], pooled[0], atol=1e-4)  # causal decoder: padding changes nothing
    cached, counts = text_features(texts, encoder, languages=["en", "de", "de"], cache_dir=tmp_path)
    assert counts == {"cached": 0, "computed": 3}
    np.testing.assert_allclose(cached, pooled, atol=1e-4)
