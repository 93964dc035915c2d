import numpy as np
import pytest
import torch

from polyemo.heads import HEADS, Targets
from polyemo.heads.multitask import ccc, ccc_loss


def _ccc_numpy(x, y):
    return 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_ccc_matches_the_definition():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y = 0.5 * x + y
    assert abs(float(ccc(torch.tensor(x), torch.tensor(y))) - _ccc_numpy(x, y)) < 1e-6
    assert abs(float(ccc(torch.tensor(x), torch.tensor(x))) - 1.0) < 1e-6
    # a shifted copy is perfectly correlated but not concordant
    assert float(ccc(torch.tensor(x), torch.tensor(x + 2.0))) < 0.5


def test_ccc_loss_ignores_unknown_targets():
    pred = torch.tensor([[0.1, 1.0], [0.5, 2.0], [0.9, 0.0], [0.2, 5.0]])
    target = torch.tensor([[0.0, float("nan")], [0.6, float("nan")], [1.0, 1.0], [float("nan"), float("nan")]])
    expected = 1 - _ccc_numpy(np.array([0.1, 0.5, 0.9]), np.array([0.0, 0.6, 1.0]))
    # second dimension has one known value: CCC undefined, left out
    assert abs(float(ccc_loss(pred, target)) - expected) < 1e-6
    zero = ccc_loss(pred.requires_grad_(), torch.full_like(pred, float("nan")))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_multitask_loss_is_weighted_sum_of_task_losses():
    torch.manual_seed(0)
    head = HEADS.get("multitask")(6, 3, base="linear", gender_weight=0.3, avd_weight=2.0)
    x = torch.randn(8, 6)
    out = head(x)
    assert out["emotion"].shape == (8, 3) and out["gender"].shape == (8, 2) and out["avd"].shape == (8, 3)
    emotion = torch.tensor([0, 1, 2, -1, 0, 1, 2, 0])
    gender = torch.tensor([0, 1, -1, 1, 0, 0, 1, -1])
    avd = torch.randn(8, 3)
    avd[2, 0] = float("nan")

    def ce(logits, target, masks):
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=-1)

    total, parts = head.compute_loss(out, Targets(emotion, gender=gender, avd=avd), ce)
    known = gender >= 0
    g = torch.nn.functional.cross_entropy(out["gender"][known], gender[known])
    expected = ce(out["emotion"], emotion, None) + 0.3 * g + 2.0 * ccc_loss(out["avd"], avd)
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"emotion", "gender", "avd"}
    total.backward()


def test_multitask_configuration_errors():
    with pytest.raises(ValueError, match="auxiliary"):
        HEADS.get("multitask")(4, 3)
    with pytest.raises(ValueError, match="torch head"):
        HEADS.get("multitask")(4, 3, base="logreg", gender_weight=1.0)
    head = HEADS.get("multitask")(4, 3, base="frame_mlp", avd_weight=1.0)
    assert head.input_kind == "frames"
    out = head(torch.randn(2, 5, 4), torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="avd"):
        head.compute_loss(out, Targets(torch.tensor([0, 1])), lambda lo, t, m: lo.sum())
