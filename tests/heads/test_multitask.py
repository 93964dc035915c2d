import numpy as np
import pytest
import torch

from polyemo.heads import HEADS, Targets


def _ccc_numpy(x, y):
    return 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


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
    pred = out["avd"].detach().numpy()
    known_avd = ~np.isnan(avd.numpy())
    ccc_part = np.mean([1 - _ccc_numpy(pred[known_avd[:, k], k], avd.numpy()[known_avd[:, k], k]) for k in range(3)])
    expected = ce(out["emotion"], emotion, None) + 0.3 * g + 2.0 * ccc_part
    assert abs(float(total.detach()) - float(expected.detach())) < 1e-5
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
