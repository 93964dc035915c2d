import numpy as np
import pytest
import torch

from polyemo.heads import HeadConfig, build_head
from polyemo.heads.layers import LayerWeighting, plot_layer_weights, reduce_layers_numpy


def test_weights_sum_to_one_and_weighted_sum_is_convex():
    layer = LayerWeighting(4)
    with torch.no_grad():
        layer.logits.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0]))
    w = layer.weights()
    assert w.shape == (4,) and abs(w.sum() - 1) < 1e-6 and (w > 0).all()
    x = torch.randn(2, 4, 3, 5)
    expected = sum(float(w[i]) * x[:, i] for i in range(4))
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_layer_norm_normalises_each_layer_before_summing():
    layer = LayerWeighting(2, layer_norm=True)
    x = torch.randn(3, 2, 8)
    x[:, 1] *= 1000.0  # a loud layer must not dominate
    out = layer(x)
    normed = torch.nn.functional.layer_norm(x, (8,))
    torch.testing.assert_close(out, normed.mean(1), rtol=1e-5, atol=1e-5)


def test_weighting_learns_to_pick_the_informative_layer():
    rng = np.random.default_rng(0)
    n, layers, dim = 240, 5, 8
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, layers, dim)).astype(np.float32)
    centres = rng.normal(scale=3.0, size=(3, dim)).astype(np.float32)
    x[:, 3] += centres[y]  # only layer 3 carries the class
    torch.manual_seed(0)
    model = build_head(HeadConfig(name="linear"), layers, dim, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt)["emotion"], yt).backward()
        opt.step()
    w = model.layer_weights()
    assert w.argmax() == 3 and w[3] > 0.5, w


def test_numpy_layer_reduction_for_classical_heads():
    x = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    np.testing.assert_array_equal(reduce_layers_numpy(x, -1), x[:, 2])
    np.testing.assert_array_equal(reduce_layers_numpy(x, "mean"), x.mean(1))
    assert reduce_layers_numpy(x, "concat").shape == (2, 12)
    with pytest.raises(ValueError, match="classical"):
        reduce_layers_numpy(x, "weighted")


def test_select_and_concat_modes():
    x = torch.randn(2, 3, 4)
    m = build_head(HeadConfig(name="linear", layers=1), 3, 4, 2)
    assert m(x)["emotion"].shape == (2, 2) and m.layer_weights() is None
    m = build_head(HeadConfig(name="linear", layers="concat"), 3, 4, 2)
    assert m.head.linear.in_features == 12 and m(x)["emotion"].shape == (2, 2)
    with pytest.raises(ValueError, match="out of range"):
        build_head(HeadConfig(name="linear", layers=3), 3, 4, 2)


def test_plot_layer_weights_writes_a_figure(tmp_path):
    target = tmp_path / "weights.png"
    fig = plot_layer_weights(np.array([[0.1, 0.6, 0.3], [0.2, 0.5, 0.3]]), target, layer_names=["a", "b", "c"])
    assert target.stat().st_size > 1000 and fig.axes[0].get_xlabel() == "layer"
    with pytest.raises(ValueError, match="names"):
        plot_layer_weights([0.5, 0.5], layer_names=["x"])
