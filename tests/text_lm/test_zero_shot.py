"""Zero-shot LM scoring on tiny random causal LMs and a word-level tokenizer built here (offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyemo.text_lm import ZeroShotConfig, ZeroShotLM

WORDS = ["<pad>", "<bos>", "<unk>", "classify", "the", "emotion", "of", "one", ":", ",", ".", "utterance",
         "i", "am", "so", "happy", "today", "angry", "sad", "neutral", "very", "emotion:", "as"]
CLASSES = ["anger", "happiness", "sadness"]
NAMES = {"anger": "angry", "happiness": "happy", "sadness": "very sad"}  # one two-token name


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", unk_token="<unk>")


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=16, n_layer=1, n_head=2))


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))


CONFIG = ZeroShotConfig(model="tiny", prompt="classify the emotion of {text} as one of : {classes} . emotion:",
                        label_names=NAMES)


@pytest.mark.parametrize("build", [gpt2, llama])
def test_scores_are_the_answer_tokens_log_likelihood(build):
    tok, model = tokenizer(), build()
    scorer = ZeroShotLM(CONFIG, CLASSES, model=model, tokenizer=tok)
    texts = ["i am so happy today", "i am angry"]
    scores = scorer.log_likelihoods(texts)
    # by hand, one sequence at a time (no padding): sum over the answer tokens, mean per token
    for i, text in enumerate(texts):
        prompt = scorer.prompt_ids(text)
        assert prompt[0] == tok.bos_token_id
        for c, name in enumerate(CLASSES):
            answer = tok(" " + NAMES[name], add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + answer])).logits[0], -1)
            expected = sum(float(logp[len(prompt) - 1 + t, a]) for t, a in enumerate(answer)) / len(answer)
            assert scores[i, c] == pytest.approx(expected, abs=1e-4)
    probabilities = scorer.predict_proba(texts)
    assert np.allclose(probabilities.sum(axis=1), 1)
    assert len(scorer.answers[2]) == 2  # "very sad"


def test_a_forced_answer_is_found():
    # Final layer norm gives every position the same hidden state, pointing at the token "angry":
    # whatever the text, the LM puts (nearly) all mass on "angry", so the class is anger.
    tok, model = tokenizer(), gpt2()
    with torch.no_grad():
        angry = model.transformer.wte.weight[WORDS.index("angry")]
        angry.mul_(10)  # a long embedding (tied to the output): its logit dominates
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(50 * angry)
    scorer = ZeroShotLM(CONFIG, CLASSES, model=model, tokenizer=tok)
    texts = ["i am so happy today", "sad", "neutral . very"]
    assert scorer.predict(texts) == ["anger"] * 3
    assert (scorer.predict_proba(texts)[:, 0] > 0.9).all()


def test_batching_does_not_change_scores():
    tok, model = tokenizer(), llama()
    texts = ["i am so happy today", "sad", "i am very very angry today", "neutral"]
    one = ZeroShotLM(CONFIG.model_copy(update={"batch_size": 1}), CLASSES, model=model, tokenizer=tok).log_likelihoods(texts)
    many = ZeroShotLM(CONFIG.model_copy(update={"batch_size": 4}), CLASSES, model=model, tokenizer=tok).log_likelihoods(texts)
    assert np.allclose(one, many, atol=1e-4)


def test_a_model_folder_loads_offline_and_a_missing_one_is_refused(tmp_path):
    tok, model = tokenizer(), gpt2()
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    scorer = ZeroShotLM(CONFIG.model_copy(update={"model": str(tmp_path / "lm")}), CLASSES)
    assert scorer.predict_proba(["i am sad"]).shape == (1, 3)
    with pytest.raises(ValueError, match="cannot load it"):
        ZeroShotLM(CONFIG.model_copy(update={"model": str(tmp_path / "nothing")}), CLASSES)
