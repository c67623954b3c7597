"""The CPU training paths: layer order, layouts and bfloat16 mixed precision."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from xal_sklearn import CNNClassifier, SmallCNN
from xal_sklearn.modules import GlobalAvgPool2d, to_channels_last

CL = torch.channels_last


def _previous_order(net):
    """The same network with the first release's layer order: ReLU before max-pool."""
    old = copy.deepcopy(net)
    layers = list(old.features)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    old.features = nn.Sequential(*layers)
    old.classifier[0] = nn.AdaptiveAvgPool2d(1)
    return old


def _images_with_ties(n=8, size=32):
    # flat backgrounds make equal values inside pooling windows, where the two
    # orders could differ if max-pooling did not commute with ReLU
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, size, size)
    x[:, :, 8:20, 10:24] = torch.rand(n, 1, 12, 14, generator=g)
    x[: n // 2, :, 20:, :] = 0.5
    return x


def test_smallcnn_pooled_blocks_pool_before_relu():
    kinds = [type(m).__name__ for m in SmallCNN().features]
    assert kinds == ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU"] * 2 + [
        "Conv2d", "BatchNorm2d", "ReLU"]


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_smallcnn_equals_the_previous_layer_order_with_gradients(layout):
    torch.manual_seed(0)
    new = SmallCNN(n_classes=3)
    old = _previous_order(new)
    assert list(new.state_dict()) == list(old.state_dict())  # saved weights load
    x = _images_with_ties().contiguous(memory_format=layout)
    outs = []
    for net in (new, old):
        net.train()
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        out.square().sum().backward()
        outs.append((out.detach(), xi.grad, [p.grad.clone() for p in net.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=0)
    for a, b in zip(outs[0][2], outs[1][2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_global_avg_pool_values_and_layout_of_its_gradient():
    x = torch.randn(4, 8, 6, 5)
    for t in (x, x.contiguous(memory_format=CL)):
        assert torch.equal(GlobalAvgPool2d()(t), nn.AdaptiveAvgPool2d(1)(t))
    h = torch.randn(4, 8, 6, 5).contiguous(memory_format=CL).requires_grad_(True)
    seen = []
    r = torch.relu(h)
    r.register_hook(lambda g: seen.append(g.stride()))
    GlobalAvgPool2d()(r).sum().backward()
    # a broadcast view, not a new tensor in the plain layout (the slow mixed-layout case)
    assert seen[0][-1] == 0 and seen[0][-2] == 0


def test_to_channels_last_moves_single_channel_conv_weights():
    net = SmallCNN(in_channels=1)
    w = net.features[0].weight
    assert w.is_contiguous(memory_format=CL) and w.stride()[1] != 1  # ambiguous strides
    before = w.detach().clone()
    moved = to_channels_last(net)
    assert len(moved) == 4  # three blocks, the last one split in two
    assert all(p.stride()[1] == 1 for p in net.parameters() if p.dim() == 4)
    assert torch.equal(net.features[0].weight, before)
    assert to_channels_last(net) == []  # already there


def _layouts_during(net, X, y, **fit_kw):
    seen = []
    hook = lambda m, i, o: seen.append((o.dtype, o.is_contiguous(memory_format=CL)  # noqa: E731
                                        and not o.is_contiguous(), m.training))
    net.initialize()
    handle = net.module_.features[0].register_forward_hook(hook)
    try:
        net.partial_fit(X, y, **fit_kw)
        proba = net.predict_proba(X)
    finally:
        handle.remove()
    return seen, proba


def test_cpu_training_runs_channels_last_and_the_plain_layout_on_request(phantoms):
    X, y = phantoms.X[:64], phantoms.y[:64]
    seen, _ = _layouts_during(CNNClassifier(n_classes=3, max_epochs=1, random_state=0), X, y)
    assert seen and all(cl for _, cl, _ in seen)  # training and prediction batches
    assert {training for _, _, training in seen} == {True, False}
    plain = CNNClassifier(n_classes=3, max_epochs=1, random_state=0)
    plain.cpu_channels_last = False
    seen, _ = _layouts_during(plain, X, y)
    assert not any(cl for dtype, cl, training in seen if training)


def test_layouts_train_to_the_same_model_within_rounding(phantoms):
    X, y = phantoms.X[:96], phantoms.y[:96]
    ours = CNNClassifier(n_classes=3, max_epochs=2, random_state=0).fit(X, y)
    plain = CNNClassifier(n_classes=3, max_epochs=2, random_state=0)
    plain.cpu_channels_last = False
    plain.fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(phantoms.X[96:]),
                               plain.predict_proba(phantoms.X[96:]), atol=1e-4)


def test_bf16_mixed_trains_in_bfloat16_and_predicts_in_float32(phantoms):
    X, y = phantoms.X[:64], phantoms.y[:64]
    net = CNNClassifier(n_classes=3, max_epochs=1, random_state=0, precision="bf16-mixed")
    seen, proba = _layouts_during(net, X, y)
    assert {dtype for dtype, _, training in seen if training} == {torch.bfloat16}
    assert {dtype for dtype, _, training in seen if not training} == {torch.float32}
    assert proba.dtype == np.float32 and np.isfinite(net.history[:, "train_loss"]).all()
    assert all(p.dtype == torch.float32 for p in net.module_.parameters())


def test_bf16_mixed_learns_as_well_as_float32(phantoms):
    X, y, X_test, y_test = phantoms.X[:160], phantoms.y[:160], phantoms.X[160:], phantoms.y[160:]
    accs = {}
    for precision in ("float32", "bf16-mixed"):
        net = CNNClassifier(n_classes=3, max_epochs=15, batch_size=16, random_state=0,
                            precision=precision)
        accs[precision] = np.mean(net.fit(X, y).predict(X_test) == y_test)
    assert accs["float32"] > 0.8
    assert abs(accs["bf16-mixed"] - accs["float32"]) <= 0.1, accs


def test_bf16_mixed_with_the_roi_loss(phantoms):
    X, y, M = phantoms.X[:64], phantoms.y[:64], phantoms.roi_masks[:64]
    losses = {}
    for roi_loss in (None, "rank"):
        net = CNNClassifier(n_classes=3, max_epochs=2, random_state=0, precision="bf16-mixed",
                            roi_loss=roi_loss, roi_warmup=0)
        net.fit(X, y, roi_masks=M if roi_loss else None)
        losses[roi_loss] = net.history[:, "train_loss"]
    assert np.isfinite(losses["rank"]).all()
    assert losses["rank"][0] > losses[None][0]  # the attention term is added


@pytest.mark.parametrize("bad", ["float16", "bf16", None, 16])
def test_unknown_precision_is_refused_before_anything_changes(phantoms, bad):
    net = CNNClassifier(n_classes=3, max_epochs=1, precision=bad)
    with pytest.raises(ValueError, match="precision must be one of"):
        net.fit(phantoms.X[:8], phantoms.y[:8])
    assert not net.initialized_


def test_precision_round_trips_through_clone_and_pickle(fitted_net, phantoms):
    net = CNNClassifier(n_classes=3, precision="bf16-mixed")
    assert clone(net).get_params()["precision"] == "bf16-mixed"
    assert pickle.loads(pickle.dumps(net)).precision == "bf16-mixed"
    # a net pickled before ``precision`` existed still predicts, in float32
    state = fitted_net.__getstate__()
    del state["precision"], state["roi_balance"], state["roi_conflict"]
    old = CNNClassifier.__new__(CNNClassifier)
    old.__setstate__(state)
    assert old.precision == "float32"
    assert (old.roi_balance, old.roi_conflict) == ("fixed", "sum")  # as it was trained
    np.testing.assert_allclose(old.predict_proba(phantoms.X[:8]),
                               fitted_net.predict_proba(phantoms.X[:8]))
