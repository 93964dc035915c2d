import json

import numpy as np
import pytest
import torch

from polyemo.heads import HeadConfig
from polyemo.train import (
    TrainConfig,
    Trainer,
    load_estimator,
    train_and_evaluate,
)
from polyemo.train.trainer import EpochSampler


def _old_linear_warmup_decay(total_steps: int, warmup_steps: int):
    """The hand-written LR factor the trainer used before transformers' scheduler (reference)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def _old_class_balanced_draw(labels: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """The hand-written class-balanced draw EpochSampler made before WeightedRandomSampler (reference)."""
    labels_t = torch.as_tensor(labels)
    labelled = torch.nonzero(labels_t >= 0).flatten()
    weights = 1.0 / torch.bincount(labels_t[labelled])[labels_t[labelled]].double()
    return labelled[torch.multinomial(weights, len(labelled), replacement=True, generator=generator)]


def test_separable_pooled_data_is_learned(make_pooled, quick_config):
    result = train_and_evaluate(make_pooled(90, 0), make_pooled(45, 1), make_pooled(45, 2),
                                HeadConfig(name="linear"), quick_config(), class_names=["a", "b", "c"])
    assert result.test_metrics["wa"] > 0.9 and result.val_metrics["macro_f1"] > 0.9
    assert result.probabilities.shape == (45, 3)
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0, atol=1e-6)
    assert result.layer_weights.shape == (2,) and result.layer_weights.argmax() == 1
    assert result.best_epoch == max(result.history, key=lambda r: r["val_macro_f1"])["epoch"]
    frame = result.predictions_frame()
    assert list(frame.columns[:3]) == ["utt_id", "label", "prediction"] and len(frame) == 45


def test_separable_frame_data_is_learned(make_frames, quick_config):
    result = train_and_evaluate(make_frames(60, 0), make_frames(30, 1), make_frames(30, 2),
                                HeadConfig(name="attentive_stats", params={"hidden_dim": 16, "attention_dim": 8}),
                                quick_config(epochs=6, lr=0.01))
    assert result.test_metrics["ua"] > 0.85


def test_checkpoint_is_the_best_validation_epoch(make_pooled, quick_config, monkeypatch):
    scripted = {1: 0.2, 2: 0.5, 3: 0.9, 4: 0.4, 5: 0.9, 6: 0.3}  # a tie at 5 keeps epoch 3
    monkeypatch.setattr(Trainer, "_selection_score", lambda self, epoch, metrics: scripted[epoch])
    states = {}

    def remember(event, info):
        if event == "epoch_end":
            states[info["epoch"]] = {k: v.clone() for k, v in info["model"].state_dict().items()}

    trainer = Trainer(HeadConfig(name="linear"), quick_config(epochs=6), 3, callbacks=[remember])
    report = trainer.fit(make_pooled(48, 0), make_pooled(24, 1))
    assert report.best_epoch == 3 and report.best_score == 0.9
    assert [r["best"] for r in report.history] == [True, True, True, False, False, False]
    final = trainer.model.state_dict()
    assert all(torch.equal(final[k], states[3][k]) for k in final)
    assert not all(torch.equal(final[k], states[6][k]) for k in final)


def test_early_stopping_after_patience_epochs_without_improvement(make_pooled, quick_config, monkeypatch):
    scripted = [0.5, 0.6, 0.55, 0.6, 0.4, 0.9, 0.95]
    monkeypatch.setattr(Trainer, "_selection_score", lambda self, epoch, metrics: scripted[epoch - 1])
    trainer = Trainer(HeadConfig(name="linear"), quick_config(epochs=7, patience=3), 3)
    report = trainer.fit(make_pooled(48, 0), make_pooled(24, 1))
    assert len(report.history) == 5 and report.best_epoch == 2  # stopped before the late 0.9


def test_rerun_gives_identical_numbers(make_pooled, quick_config):
    config = quick_config(epochs=4, sampling="class_balanced", lr=0.01)
    head = HeadConfig(name="multitask", params={"base": "linear", "gender_weight": 0.5, "dropout": 0.3})
    def run(seed):
        train = make_pooled(50, 0)
        train.gender = np.arange(50) % 2
        return train_and_evaluate(train, make_pooled(20, 1), make_pooled(20, 2), head,
                                  config.model_copy(update={"seed": seed}))
    first, second, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in first.history] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in second.history]
    assert not np.array_equal(first.probabilities, other.probabilities)
    assert first.outputs["gender"].shape == (20, 2)


def test_caller_random_state_is_untouched(make_pooled, quick_config):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Trainer(HeadConfig(name="linear"), quick_config(epochs=1), 3).fit(make_pooled(30, 0), make_pooled(15, 1))
    assert torch.equal(torch.rand(3), expected)


def test_gradient_accumulation_matches_a_large_batch(make_pooled, quick_config):
    train, val = make_pooled(64, 0), make_pooled(16, 1)
    big = Trainer(HeadConfig(name="linear"), quick_config(epochs=1, batch_size=32, max_grad_norm=None), 3)
    accumulated = Trainer(HeadConfig(name="linear"),
                          quick_config(epochs=1, batch_size=16, grad_accum=2, max_grad_norm=None), 3)
    big.fit(train, val)
    accumulated.fit(train, val)
    for (name, a), (_, b) in zip(big.model.state_dict().items(), accumulated.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_warmup_then_linear_decay():
    factor = _old_linear_warmup_decay(total_steps=10, warmup_steps=2)
    assert [round(factor(s), 3) for s in range(11)] == [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]


@pytest.mark.parametrize("total, warmup", [(10, 2), (10, 0), (7, 7), (1, 0), (33, 3), (120, 12), (5, 1)])
def test_transformers_schedule_gives_the_old_lr_sequence(total, warmup):
    """The trainer's scheduler (transformers' linear warm-up + decay) steps through exactly
    the learning rates of the LambdaLR over our former factor, bit for bit."""
    from transformers import get_linear_schedule_with_warmup

    def sequence(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.003)
        scheduler = make(optimizer)
        lrs = []
        for _ in range(total + 2):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return lrs

    old = sequence(lambda o: torch.optim.lr_scheduler.LambdaLR(o, _old_linear_warmup_decay(total, warmup)))
    new = sequence(lambda o: get_linear_schedule_with_warmup(o, warmup, total))
    assert new == old


def test_class_balanced_draws_are_those_of_the_old_sampler():
    labels = np.array([0] * 30 + [1] * 6 + [2] * 4 + [-1] * 5)
    ours = EpochSampler(labels, "class_balanced", torch.Generator().manual_seed(7))
    reference = torch.Generator().manual_seed(7)
    for _ in range(5):  # successive epochs share the generator
        assert torch.equal(ours.epoch(), _old_class_balanced_draw(labels, reference))


def test_samplers():
    labels = np.array([0] * 30 + [1] * 6 + [2] * 4 + [-1] * 5)
    g = torch.Generator().manual_seed(0)
    under = EpochSampler(labels, "undersample", g)
    rows = under.epoch()
    assert len(under) == len(rows) == 12 and np.bincount(labels[rows.numpy()]).tolist() == [4, 4, 4]
    balanced = EpochSampler(labels, "class_balanced", g)
    drawn = np.concatenate([labels[balanced.epoch().numpy()] for _ in range(50)])
    share = np.bincount(drawn) / len(drawn)
    assert (labels[balanced.epoch().numpy()] >= 0).all() and np.allclose(share, 1 / 3, atol=0.05)
    plain = EpochSampler(labels, "none", g).epoch()
    assert sorted(plain.tolist()) == list(range(len(labels)))


def test_masks_reach_the_loss_and_log_and_checkpoint_are_written(make_pooled, quick_config, tmp_path, monkeypatch):
    train = make_pooled(30, 0)
    train.masks = np.ones((30, 3), dtype=bool)
    train.masks[train.labels != 2, 2] = False  # rows of a "corpus" that has no class 2
    seen = []
    import polyemo.train.trainer as trainer_module
    real = trainer_module.build_emotion_loss

    def spy(*args, **kwargs):
        loss = real(*args, **kwargs)
        def wrapped(logits, targets, masks):
            if logits.requires_grad:  # training batches (validation has no masks here)
                seen.append(masks.clone())
            return loss(logits, targets, masks)
        return wrapped

    monkeypatch.setattr(trainer_module, "build_emotion_loss", spy)
    config = quick_config(epochs=2, batch_size=30, log_path=tmp_path / "log.jsonl",
                          checkpoint_path=tmp_path / "best.pt")
    trainer = Trainer(HeadConfig(name="linear"), config, 3)
    report = trainer.fit(train, make_pooled(15, 1))
    assert seen and int((~seen[0]).sum()) == int((~train.masks).sum())
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and {"train_loss", "val_ua", "val_macro_f1", "lr"} <= set(lines[0])
    checkpoint = torch.load(tmp_path / "best.pt", weights_only=True)
    assert checkpoint["best_epoch"] == report.best_epoch and len(checkpoint["layer_weights"]) == 2


@pytest.mark.parametrize("head", ["linear", "logreg"])
def test_saved_estimator_predicts_the_same(make_pooled, quick_config, tmp_path, head):
    config = quick_config(epochs=2, normalisation="speaker", speaker_min_utterances=3)
    result = train_and_evaluate(make_pooled(40, 0), make_pooled(20, 1), make_pooled(20, 2),
                                HeadConfig(name=head, layers=1 if head == "logreg" else None), config)
    result.estimator.save(tmp_path / "model")
    loaded = load_estimator(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict_proba(make_pooled(20, 2)), result.probabilities, rtol=1e-6, atol=1e-8)


def test_classical_head_through_the_same_interface(make_pooled, quick_config):
    result = train_and_evaluate(make_pooled(60, 0), make_pooled(30, 1), make_pooled(30, 2),
                                HeadConfig(name="svm_linear", layers="concat", params={"C": [0.1, 1.0]}),
                                quick_config(normalisation="global"))
    assert result.test_metrics["wa"] > 0.85 and result.best_epoch is None
    assert set(result.history[0]["validation_scores"]) == {"0.1", "1.0"}


def test_mismatched_inputs_are_clear_errors(make_pooled, make_frames, quick_config):
    with pytest.raises(ValueError, match="takes frames features"):
        Trainer(HeadConfig(name="frame_mlp"), quick_config(), 3).fit(make_pooled(12, 0), make_pooled(6, 1))
    with pytest.raises(ValueError, match="no labelled rows"):
        unlabelled = make_pooled(6, 1)
        unlabelled.labels[:] = -1
        Trainer(HeadConfig(name="linear"), quick_config(), 3).fit(make_pooled(12, 0), unlabelled)
    with pytest.raises(ValueError, match="pooled features"):
        train_and_evaluate(make_frames(12, 0), make_frames(6, 1), make_frames(6, 2), HeadConfig(name="logreg"),
                           quick_config())
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(loss_params={"label_smoothing": 0.1})
    with pytest.raises(ValueError, match="takes no parameter"):
        Trainer(HeadConfig(name="linear"), quick_config(loss="focal", label_smoothing=0.1), 3).fit(
            make_pooled(12, 0), make_pooled(6, 1))


def test_multitask_learns_arousal_valence_dominance(make_frames, quick_config):
    from polyemo.metrics import regression_metrics

    def with_avd(data):
        # dimensions follow the class (which shifts the frames), one value unknown
        data.avd = np.stack([data.labels * 0.5, -data.labels * 0.3, np.where(data.labels == 1, 1.0, 0.0)], 1)
        data.avd[0, 1] = np.nan
        return data

    head = HeadConfig(name="multitask", params={"base": "frame_mlp", "avd_weight": 1.0, "hidden_dim": 16})
    result = train_and_evaluate(with_avd(make_frames(60, 0)), with_avd(make_frames(30, 1)),
                                with_avd(make_frames(30, 2)), head, quick_config(epochs=8, lr=0.01))
    assert result.outputs["avd"].shape == (30, 3)
    scores = regression_metrics(with_avd(make_frames(30, 2)).avd, result.outputs["avd"])
    assert scores["mean_ccc"] > 0.6, scores


def test_nan_features_are_refused_by_name(make_pooled, quick_config):
    train = make_pooled(12, 0)
    train.features[4, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 rows with NaN.*u0_4"):
        Trainer(HeadConfig(name="linear"), quick_config(), 3).fit(train, make_pooled(6, 1))
