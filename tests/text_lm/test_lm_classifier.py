"""The LoRA LM classifier and the speech-text model on tiny random GPT-2 / LLaMA folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyemo.text_lm.rows import pack_row, unpack_row
from polyemo.heads.model import HeadConfig
from polyemo.train import SplitData, TrainConfig
from polyemo.train.estimator import build_estimator, load_estimator

POSITIVE = ["i am so happy today", "what a lovely day", "i am so happy", "a lovely day today", "so happy"]
NEGATIVE = ["i am angry", "leave me alone", "this is very sad", "angry and sad", "very sad today"]


def text_split(texts, labels, speech=None, language="en"):
    rows = [pack_row(t, language, None if speech is None else speech[i]) for i, t in enumerate(texts)]
    return SplitData(rows, labels=np.asarray(labels), utt_ids=np.array([f"u{i}" for i in range(len(texts))]))


def toy_text(repeats: int, seed: int):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(repeats):
        for t in POSITIVE:
            texts.append(t), labels.append(1)
        for t in NEGATIVE:
            texts.append(t), labels.append(0)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], [labels[i] for i in order]


def estimator(folder, loss="vs", epochs=12, **params):
    head = HeadConfig(name="lm_classifier", params={"lm": str(folder), "hidden_dim": 32, "attention_dim": 16,
                                                   "dropout": 0.0, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, **params})
    config = TrainConfig(epochs=epochs, lr=5e-3, batch_size=8, patience=None, selection_metric="ua", show_progress=False,
                         loss=loss, loss_params={"gamma": 0.2, "tau": 1.0} if loss == "vs" else {"gamma": 2.0})
    return build_estimator(head, config, 2, ["negative", "positive"])


def test_pack_and_unpack_rows():
    text, language, speech = unpack_row(pack_row("Grüße, 你好", "de"))
    assert (text, language, speech) == ("Grüße, 你好", "de", None)
    tokens = np.arange(12, dtype=np.float32).reshape(3, 4)
    text, language, speech = unpack_row(pack_row("", None, tokens))
    assert text == "" and language is None
    np.testing.assert_array_equal(speech, tokens)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_lora_trains_only_adapters_and_head_and_learns_a_separable_task(tiny_lms, kind, tmp_path):
    texts, labels = toy_text(4, 0)
    train, val = text_split(texts, labels), text_split(*toy_text(1, 1))
    model = estimator(tiny_lms[kind], loss="vs" if kind == "gpt2" else "weighted_focal")
    report = model.fit(train, val)
    from transformers import AutoModel

    original = AutoModel.from_pretrained(tiny_lms[kind]).state_dict()
    trained = {k: v for k, v in model.model.backbone.model.state_dict().items() if "lora_" not in k}
    changed = [k for k, v in trained.items() if k.replace(".base_layer", "") in original
               and not torch.equal(v, original[k.replace(".base_layer", "")])]
    assert not changed, f"frozen LM weights moved: {changed[:3]}"
    assert len(trained) == len(original)  # every LM tensor is still there, only wrapped
    learnable = {k for k, v in model.model.named_parameters() if v.requires_grad}
    assert learnable and all("lora_" in k or not k.startswith("backbone.") for k in learnable)
    assert any("lora_" in k for k in learnable) and any(k.startswith("head.") for k in learnable)
    lora_b = [v for k, v in model.model.named_parameters() if "lora_B" in k]
    assert any(float(v.detach().abs().max()) > 0 for v in lora_b)  # LoRA's B starts at 0: training moved it
    assert report.val_metrics["ua"] == 1.0
    test = text_split(["so happy today", "leave me alone and angry"], [1, 0])
    np.testing.assert_array_equal(model.predict(test).predictions, [1, 0])

    saved = model.save(tmp_path / "model")
    assert (saved / "lm.pt").stat().st_size < 200_000  # the LM itself is not copied
    again = load_estimator(saved)
    np.testing.assert_allclose(again.predict(test).probabilities, model.predict(test).probabilities, atol=1e-6)


def test_frozen_lm_without_lora(tiny_lms):
    model = estimator(tiny_lms["gpt2"], epochs=2, lora={"r": 0})
    model.fit(text_split(*toy_text(2, 0)), text_split(*toy_text(1, 1)))
    assert all(not k.startswith("backbone.") for k, v in model.model.named_parameters() if v.requires_grad)


@pytest.mark.parametrize("queries", [3, 0])
def test_speech_text_model_reads_the_speech_tokens(tiny_lms, queries, tmp_path):
    """The text is the same for every row; only the speech tokens carry the class."""

    def split(n, seed):
        g = np.random.default_rng(seed)
        labels = np.arange(n) % 2
        speech = [g.normal(size=(5, 6)).astype(np.float32) + 2.0 * (2 * y - 1) for y in labels]
        return text_split(["der Lappen liegt auf dem Eisschrank"] * n, labels, speech, "de")

    model = estimator(tiny_lms["llama"], epochs=8, queries=queries)
    report = model.fit(split(40, 0), split(12, 1))
    assert model.model.adapter is not None and report.val_metrics["ua"] >= 0.9
    assert model.predict(split(10, 2)).probabilities.argmax(1).tolist() == (np.arange(10) % 2).tolist()
    again = load_estimator(model.save(tmp_path / "st"))
    np.testing.assert_allclose(again.predict(split(4, 3)).probabilities, model.predict(split(4, 3)).probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="the head was trained on 1 of dim 6"):
        model.predict(text_split(["x"], [0]))


def test_refit_fixes_the_chosen_epoch(tiny_lms):
    from polyemo.train.estimator import fit_and_refit

    head = HeadConfig(name="lm_classifier", params={"lm": str(tiny_lms["gpt2"]), "hidden_dim": 16, "attention_dim": 8})
    config = TrainConfig(epochs=3, lr=5e-3, batch_size=8, patience=None, show_progress=False, loss="vs")
    refitted, report, fixed = fit_and_refit(head, config, 2, ["a", "b"], text_split(*toy_text(2, 0)),
                                            text_split(*toy_text(1, 1)))
    assert fixed["epochs"] == report.best_epoch and refitted.train_config.epochs == report.best_epoch


def test_a_missing_lm_is_a_clear_error(tmp_path):
    model = estimator(tmp_path / "no-such-lm", epochs=1)
    with pytest.raises(ValueError, match="no-such-lm"):
        model.fit(text_split(*toy_text(1, 0)), text_split(*toy_text(1, 1)))


def test_repeated_texts_are_run_once_with_the_same_outputs_and_gradients(tiny_lms):
    model = estimator(tiny_lms["llama"], epochs=1)
    model.fit(text_split(*toy_text(1, 0)), text_split(*toy_text(1, 1)))
    net = model.model
    ids = [net.backbone.token_ids(t, "en") for t in ["so happy", "i am angry", "so happy", "so happy"]]
    calls = []
    handle = net.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    shared = net(ids, [None] * 4)["emotion"]
    handle.remove()
    assert calls == [2]
    separate = torch.cat([net._forward([i], [None])["emotion"] for i in ids])
    torch.testing.assert_close(shared, separate, atol=1e-5, rtol=1e-5)
    lora = next(p for n, p in net.named_parameters() if "lora_A" in n)
    grads = []
    for out in (shared, separate):
        net.zero_grad()
        (out if out is separate else net(ids, [None] * 4)["emotion"]).sum().backward()
        grads.append(lora.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_speech_adapter_standardises_tokens_per_position():
    from polyemo.heads.lm import SpeechQueryAdapter

    torch.manual_seed(0)
    tokens = [torch.randn(3, 4) for _ in range(20)]
    scaled = [t * torch.tensor([1000.0, 1.0, 0.01, 5.0]) + 300.0 for t in tokens]  # raw statistics of wild scales
    adapter = SpeechQueryAdapter(4, 8, queries=2)
    adapter.fit_standardiser(tokens)
    assert adapter.mean.shape == (3, 4)
    expected = adapter(torch.stack(tokens[:5]), torch.full((5,), 3))
    unfitted = adapter(torch.stack(scaled[:5]), torch.full((5,), 3))
    adapter.fit_standardiser(scaled)
    refitted = adapter(torch.stack(scaled[:5]), torch.full((5,), 3))
    torch.testing.assert_close(refitted, expected, atol=2e-3, rtol=1e-2)  # float32 round-off of the scaled inputs
    assert float((unfitted - expected).abs().max()) > 0.1
    adapter.fit_standardiser([torch.randn(n, 4) for n in (2, 5, 7)])  # frames of different lengths: one for all
    assert adapter.mean.shape == (1, 4)
