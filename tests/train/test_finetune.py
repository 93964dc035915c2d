"""The finetune estimator on tiny random-weight models: what trains, crops, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from polyemo.heads.model import HeadConfig
from polyemo.train import SplitData, TrainConfig, build_estimator
from polyemo.train.finetuning.audio import cut, eval_input, training_input
from polyemo.train.finetuning.settings import CropSettings, FinetuneSettings

TINY_CONV = {"conv_dim": (16,) * 7, "conv_stride": (5, 2, 2, 2, 2, 2, 2), "conv_kernel": (10, 3, 3, 3, 3, 2, 2)}
# no dropout anywhere: one process and two must draw nothing the other does not
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  final_dropout=0.0)


def _configs():
    from transformers import Wav2Vec2Config, WavLMConfig, WhisperConfig

    return {
        # a pre-norm ("stable layer norm") encoder: its last returned state has the final norm
        "w2v_stable": Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, hidden_size=16,
                                     num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **TINY_CONV,
                                     **NO_DROPOUT),
        "wavlm": WavLMConfig(feat_extract_norm="group", num_buckets=32, max_bucket_distance=80, hidden_size=16,
                             num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **TINY_CONV, **NO_DROPOUT),
        "whisper": WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64,
                                 num_mel_bins=80, max_source_positions=1500, max_target_positions=32,
                                 pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("tiny_ft")
    paths = {}
    for name, config in _configs().items():
        torch.manual_seed(0)
        AutoModel.from_config(config).save_pretrained(root / name)
        paths[name] = root / name
    return paths


def clips(n: int, seed: int) -> SplitData:
    """Noise bursts whose loudness and pitch carry the class, of different lengths."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    waves = []
    for i in range(n):
        t = np.arange(int(rng.integers(6000, 20000))) / 16000
        wave = 0.05 * (1 + y[i]) * np.sin(2 * np.pi * (150 + 200 * y[i]) * t) + 0.01 * rng.standard_normal(t.size)
        waves.append(wave.astype(np.float32)[None, :, None])
    return SplitData(waves, y, speakers=np.array([f"s{i % 4}" for i in range(n)], dtype=object),
                     utt_ids=np.array([f"u{seed}_{i}" for i in range(n)]))


def make(path: Path, train_overrides: dict | None = None, **params):
    params = {"encoder": str(path), "crop": {"train": "random", "eval": "whole", "seconds": 0.75}, **params}
    config = TrainConfig(**{"epochs": 2, "batch_size": 6, "lr": 3e-3, "warmup_ratio": 0.0, "show_progress": False,
                            "refit": False, "patience": None, **(train_overrides or {})})
    return build_estimator(HeadConfig(name="finetune", params=params), config, 3, ["a", "b", "c"])


def pretrained_state(path: Path) -> dict[str, torch.Tensor]:
    from polyemo.train.finetuning.model import load_trainable_encoder

    encoder, _ = load_trainable_encoder(str(path))
    return {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}


@pytest.mark.parametrize("family", ["whisper", "wavlm"])
def test_lora_changes_only_adapters_and_head(tiny, family):
    estimator = make(tiny[family], method="lora", lora={"rank": 2, "alpha": 4, "targets": ["q_proj", "v_proj"]})
    estimator.fit(clips(18, 1), clips(9, 2))
    before = pretrained_state(tiny[family])
    after = estimator.model.state_dict()
    base = {k: k.replace(".base_layer", "") for k in after}  # peft wraps an adapted Linear as base_layer
    changed = {k for k, v in after.items() if base[k] not in before or not torch.equal(v, before[base[k]])}
    assert changed and all("lora_" in k or k.startswith("head.") for k in changed), sorted(changed)
    assert any("lora_B" in k for k in changed) and any(k.startswith("head.") for k in changed)
    # every pretrained tensor is bit-identical (the adapted Linear keeps its base weight)
    for key, value in before.items():
        mapped = key if key in after else key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(after[mapped], value), key
    assert set(estimator.trained_tensors()) == {k for k in after if "lora_" in k or k.startswith("head.")}


@pytest.mark.parametrize("family", ["whisper", "wavlm"])
def test_frozen_frontend_stays_bit_identical(tiny, family):
    estimator = make(tiny[family], method="full", freeze_frontend=True, freeze_blocks=1)
    estimator.fit(clips(18, 1), clips(9, 2))
    before = pretrained_state(tiny[family])
    after = estimator.model.state_dict()
    stem = ("encoder.encoder.conv1.", "encoder.encoder.conv2.") if family == "whisper" else ("encoder.model.feature_extractor.",)
    frozen = [k for k in before if k.startswith(stem) or ".layers.0." in k]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    trained = [k for k in before if ".layers.1." in k and k.endswith("weight")]
    assert any(not torch.equal(after[k], before[k]) for k in trained), "the unfrozen block did not train"


def test_crops_random_in_training_whole_in_evaluation(tiny, monkeypatch):
    crop = CropSettings(train="random", eval="whole", seconds=0.5)
    settings = FinetuneSettings(encoder="x", crop=crop)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    drawn = [training_input(wave, crop, settings.augment, 0, epoch, 3) for epoch in range(1, 6)]
    assert all(d.size == 8000 for d in drawn)
    starts = {int(np.flatnonzero(np.isclose(wave, d[0]))[0]) for d in drawn}
    assert len(starts) > 1  # a different window in different epochs
    assert np.array_equal(training_input(wave, crop, settings.augment, 0, 2, 3), drawn[1])  # from (seed, epoch, row)
    assert np.array_equal(eval_input(wave, crop), wave)
    assert cut(wave[:4000], "random", crop, np.random.default_rng(0)).size == 4000  # shorter clips whole
    fixed = CropSettings(train="fixed", eval="fixed", seconds=0.5)
    assert eval_input(wave[:3000], fixed).size == 8000 and np.array_equal(eval_input(wave, fixed), wave[:8000])

    # what the encoder is given: random 0.5 s windows while training, whole clips in evaluation
    from polyemo.train.finetuning.model import WhisperTrainable

    seen: list[tuple[bool, list[int]]] = []
    original = WhisperTrainable.prepare

    def record(self, waves):
        seen.append((self.training, [w.size for w in waves]))
        return original(self, waves)

    monkeypatch.setattr(WhisperTrainable, "prepare", record)
    train, val = clips(12, 1), clips(6, 2)
    estimator = make(tiny["whisper"], train_overrides={"epochs": 1}, crop={"train": "random", "eval": "whole", "seconds": 0.5})
    estimator.fit(train, val)
    training_sizes = [s for mode, sizes in seen if mode for s in sizes]
    eval_sizes = sorted(s for mode, sizes in seen if not mode for s in sizes)
    assert training_sizes and set(training_sizes) == {8000}
    assert eval_sizes == sorted(f.shape[1] for f in val.features)


RESUME_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_finetune import clips, make
    import polyemo.train.finetuning.loop as loop
    from pathlib import Path
    model, log, kill_after = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    original = loop._save_state
    def save(path, payload):
        original(path, payload)
        if kill_after and payload.get("epoch") == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind
    loop._save_state = save
    estimator = make(model, train_overrides={{"epochs": 3, "log_path": str(log)}}, method="full", freeze_frontend=True)
    report = estimator.fit(clips(18, 1), clips(9, 2))
    probabilities = estimator.predict(clips(9, 3)).probabilities
    print(json.dumps({{"history": [{{k: v for k, v in h.items() if k != "seconds"}} for h in report.history],
                      "best": report.best_epoch, "p": probabilities.tolist(), "resumed": estimator.resumed_from}}))
""")


def test_resume_after_sigkill_reproduces(tiny, tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

    def run(log: Path, kill_after: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(tiny["whisper"]), str(log), str(kill_after)],
                              capture_output=True, text=True, env=env, timeout=120)

    killed = run(tmp_path / "a" / "log.jsonl", 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "a" / "log.state" / "state.pt").is_file()
    resumed = run(tmp_path / "a" / "log.jsonl", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads(resumed.stdout.splitlines()[-1])
    # the same fit, never interrupted, in this process
    estimator = make(tiny["whisper"], train_overrides={"epochs": 3, "log_path": str(tmp_path / "b" / "log.jsonl")},
                     method="full", freeze_frontend=True)
    report = estimator.fit(clips(18, 1), clips(9, 2))
    assert a["resumed"] == 3 and estimator.resumed_from is None
    assert a["history"] == [{k: v for k, v in h.items() if k != "seconds"} for h in report.history]
    assert a["best"] == report.best_epoch
    assert np.array_equal(np.array(a["p"]), estimator.predict(clips(9, 3)).probabilities)


def test_two_gloo_processes_match_one(tiny, tmp_path, monkeypatch):
    histories = {}
    for world in (1, 2):
        monkeypatch.setenv("POLYEMO_NPROC", str(world))
        estimator = make(tiny["wavlm"], train_overrides={"epochs": 2, "batch_size": 6, "grad_accum": 2,
                                                          "log_path": str(tmp_path / f"w{world}" / "log.jsonl")},
                         method="full", freeze_frontend=True, crop={"train": "fixed", "eval": "fixed", "seconds": 0.5},
                         dropout=0.0)
        report = estimator.fit(clips(16, 1), clips(8, 2))
        histories[world] = (report.history, estimator.predict(clips(8, 3)).probabilities)
    (one, p1), (two, p2) = histories[1], histories[2]
    assert [h["processes"] for h in two] == [2, 2]
    np.testing.assert_allclose([h["train_loss"] for h in two], [h["train_loss"] for h in one], rtol=1e-5)
    assert [h["val_macro_f1"] for h in two] == [h["val_macro_f1"] for h in one]
    np.testing.assert_allclose(p2, p1, atol=1e-5)


def test_frozen_prefix_cache_gives_the_same_model(tiny):
    """Front-end + frozen blocks computed once per clip (shared across fits) == recomputed."""
    from polyemo.train.finetuning import loop

    runs = {}
    for cached in (False, True):
        loop._SHARED_PREFIXES.clear()
        estimator = make(tiny["whisper"], train_overrides={"epochs": 2}, method="full", freeze_blocks=1,
                         crop={"train": "fixed", "eval": "fixed", "seconds": 0.75}, cache_frozen=cached)
        report = estimator.fit(clips(12, 1), clips(6, 2))
        runs[cached] = ([h["train_loss"] for h in report.history], estimator.predict(clips(6, 3)).probabilities)
        assert bool(loop._SHARED_PREFIXES) == cached
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-5)
    np.testing.assert_allclose(runs[True][1], runs[False][1], atol=1e-5)


@pytest.mark.parametrize("family", ["whisper", "wavlm", "w2v_stable"])
def test_model_stops_at_the_hidden_state_read(tiny, family):
    """Blocks above the layer the head reads never run, and its pooled state is the one a
    full run of every block gives."""
    from polyemo.train.finetuning.loop import build_model

    calls: dict[int, int] = {}
    full = build_model(FinetuneSettings(encoder=str(tiny[family]), layer=-1), 3).eval()
    short = build_model(FinetuneSettings(encoder=str(tiny[family]), layer=1), 3).eval()
    for index, block in enumerate(short.encoder.blocks()):
        block.register_forward_hook(lambda *_, i=index: calls.__setitem__(i, calls.get(i, 0) + 1))
    waves = [w[0, :, 0] for w in clips(4, 5).features]
    inputs = short.encoder.prepare(waves)
    with torch.no_grad():
        got = short.pooled(inputs)[:, 0]
        states, lengths = full.encoder(inputs)  # every block (weights identical: same pretrained folder)
    from polyemo.train.finetuning.model import masked_mean

    # block 1 (above hidden state 1) never ran (a pre-norm encoder runs it: its state 1 is raw)
    assert len(states) == 3 and calls == ({0: 1, 1: 1} if family == "w2v_stable" else {0: 1})
    assert torch.equal(got, masked_mean(states[1], lengths))
    assert len(short.encoder.blocks()) == 2  # the encoder is whole again after the forward
    # and nothing above the layer read is trained
    assert not any(p.requires_grad for p in short.encoder.blocks()[1].parameters())


def test_frozen_prefix_is_computed_once_across_folds(tiny, monkeypatch):
    """Two fits in one process (two folds) sharing clips: the second computes the front-end and
    frozen blocks only for clips the first did not see (keyed by content, encoder, blocks)."""
    from polyemo.train.finetuning import loop
    from polyemo.train.finetuning.model import WhisperTrainable

    loop._SHARED_PREFIXES.clear()
    computed: list[int] = []
    original = WhisperTrainable.frontend

    def counting(self, inputs):
        computed.append(int(inputs["mels"].shape[0]))
        return original(self, inputs)

    monkeypatch.setattr(WhisperTrainable, "frontend", counting)
    a, b, c = clips(12, 1), clips(6, 2), clips(6, 3)
    fold = dict(train_overrides={"epochs": 2}, method="full", freeze_frontend=True, freeze_blocks=1, layer=2,
                crop={"train": "fixed", "eval": "fixed", "seconds": 0.75})
    first = make(tiny["whisper"], **fold)
    first.fit(a, b)
    first.predict(c)
    assert sum(computed) == 24  # every clip once, whatever the epochs
    computed.clear()
    second = make(tiny["whisper"], **fold)  # the next fold: c trains, a is held out
    second.fit(c, b)
    second.predict(a)
    assert sum(computed) == 0
    assert list(loop._SHARED_PREFIXES) == [(str(tiny["whisper"]), 1)]
    # another frozen depth is another prefix
    other = make(tiny["whisper"], **{**fold, "freeze_blocks": 0, "train_overrides": {"epochs": 1}})
    other.fit(c, b)
    assert sum(computed) == 12


def test_standardised_pooled_state_uses_training_statistics(tiny, tmp_path):
    """``standardise``: the pooled state is standardised with the pretrained encoder's mean and
    spread over the training clips (fixed before the first step), saved and loaded with the model."""
    from polyemo.train import load_estimator
    from polyemo.train.finetuning.audio import eval_input as crop_of
    from polyemo.train.finetuning.loop import build_model

    train, val = clips(12, 1), clips(6, 2)
    settings = dict(method="full", freeze_frontend=True, freeze_blocks=1, layer=2, standardise=True,
                    crop={"train": "fixed", "eval": "fixed", "seconds": 0.75})
    estimator = make(tiny["whisper"], train_overrides={"epochs": 2}, **settings)
    estimator.fit(train, val)
    pretrained = build_model(FinetuneSettings(encoder=str(tiny["whisper"]), layer=2), 3).eval()
    crop = CropSettings(train="fixed", eval="fixed", seconds=0.75)
    with torch.no_grad():
        raw = pretrained.pooled(pretrained.encoder.prepare([crop_of(w[0, :, 0], crop) for w in train.features]))
    model = estimator.model
    torch.testing.assert_close(model.pool_shift, raw.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.pool_scale, raw.std(0, unbiased=False), rtol=1e-4, atol=1e-6)
    assert {"pool_shift", "pool_scale"} <= set(estimator.trained_tensors())
    # the trained block changed; the statistics stay those of the pretrained encoder
    saved = estimator.save(tmp_path / "est")
    loaded = load_estimator(saved)
    np.testing.assert_allclose(loaded.predict(clips(6, 3)).probabilities,
                               estimator.predict(clips(6, 3)).probabilities, atol=1e-6)
