import pytest
import torch

from polyemo.heads import HEADS, HeadConfig, build_head
from polyemo.heads.base import Output

TORCH_HEADS = {"linear": "pooled", "frame_mlp": "frames", "attentive_stats": "frames"}


def test_registry_lists_every_head():
    assert {"linear", "frame_mlp", "attentive_stats", "multitask", "logreg", "svm_linear", "svm_rbf"} <= set(HEADS.names())
    with pytest.raises(KeyError, match="known"):
        HEADS.get("nope")
    with pytest.raises(ValueError):
        HeadConfig(name="nope")


@pytest.mark.parametrize("name", sorted(TORCH_HEADS))
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    model = build_head(HeadConfig(name=name), num_layers=3, feature_dim=6, num_classes=4)
    if TORCH_HEADS[name] == "pooled":
        x, lengths = torch.randn(5, 3, 6), None
    else:
        x, lengths = torch.randn(5, 3, 7, 6), torch.tensor([7, 1, 4, 7, 2])
    out = model(x, lengths)
    assert set(out) == {"emotion"} and out["emotion"].shape == (5, 4)
    out["emotion"].logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.layers.logits.grad.abs().sum() > 0  # the layer weights are trained too


def test_wrong_input_rank_is_a_clear_error():
    model = build_head(HeadConfig(name="linear"), num_layers=2, feature_dim=4, num_classes=3)
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(2, 2, 5, 4))


@pytest.mark.parametrize("name,params", [
    ("frame_mlp", {"pooling": "logits"}),
    ("frame_mlp", {"pooling": "probabilities"}),
    ("attentive_stats", {}),
    ("multitask", {"base": "attentive_stats", "gender_weight": 0.5, "avd_weight": 1.0}),
])
def test_padding_does_not_change_frame_head_output(name, params):
    torch.manual_seed(0)
    model = build_head(HeadConfig(name=name, params=params), num_layers=2, feature_dim=5, num_classes=3).eval()
    short = torch.randn(1, 2, 4, 5)
    alone = model(short, torch.tensor([4]))
    # Same utterance padded to 9 frames with huge garbage, batched with a longer one.
    padded = torch.full((2, 2, 9, 5), 1e6)
    padded[0, :, :4] = short[0]
    padded[1] = torch.randn(2, 9, 5)
    batched = model(padded, torch.tensor([4, 9]))
    for key in alone:
        torch.testing.assert_close(batched[key][0], alone[key][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched["emotion"][1], alone["emotion"][0])


def test_probability_pooling_returns_log_mean_probabilities():
    torch.manual_seed(0)
    head = HEADS.get("frame_mlp")(4, 3, pooling="probabilities").eval()
    x = torch.randn(1, 6, 4)
    frame_logits = head.out(head.body(x))[0]
    expected = torch.softmax(frame_logits, -1).mean(0).log()
    torch.testing.assert_close(head(x, torch.tensor([6]))["emotion"][0], expected)


def test_outputs_must_include_emotion_of_the_right_size():
    with pytest.raises(ValueError, match="emotion"):
        HEADS.get("linear")(4, 3, outputs=[Output("emotion", 2)])
    head = HEADS.get("linear")(4, 3, outputs=[Output("emotion", 3), Output("avd", 3, "regression")])
    out = head(torch.randn(2, 4))
    assert out["emotion"].shape == (2, 3) and out["avd"].shape == (2, 3)


def test_input_kind_follows_a_multitask_base():
    from polyemo.heads import head_input_kind

    assert head_input_kind("linear") == "pooled" and head_input_kind("svm_rbf") == "pooled"
    assert head_input_kind("attentive_stats") == "frames"
    assert HeadConfig(name="multitask", params={"base": "frame_mlp", "avd_weight": 1.0}).input_kind() == "frames"
    assert HeadConfig(name="multitask", params={"gender_weight": 1.0}).input_kind() == "pooled"


def test_attentive_pooling_with_flat_scores_is_mean_and_std_of_valid_frames():
    from polyemo.heads.attentive_stats import AttentiveStatsPooling

    pool = AttentiveStatsPooling(3, attention_dim=4)
    with torch.no_grad():
        for p in pool.score.parameters():
            p.zero_()  # every frame scores 0: uniform attention
    x = torch.randn(2, 6, 3)
    out = pool(x, torch.tensor([6, 4]))
    for row, n in enumerate([6, 4]):
        frames = x[row, :n]
        expected = torch.cat([frames.mean(0), frames.std(0, unbiased=False)])
        torch.testing.assert_close(out[row], expected, rtol=1e-5, atol=1e-5)
