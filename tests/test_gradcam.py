import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from torch import nn

from xal_sklearn import CNNClassifier, gradcam


def hand_gradcam(module, layer, x, target=None):
    """Reference: hooks, one image at a time, as reference scripts do."""
    module.eval()
    out = []
    for img in x:
        store = {}
        # keep the layer output; pass a copy on so in-place ReLUs cannot alter it
        handle = layer.register_forward_hook(lambda m, i, o: store.update(act=o) or o.clone())
        logits = module(torch.from_numpy(img[None]))
        handle.remove()
        t = int(logits.argmax()) if target is None else int(target)
        grad, = torch.autograd.grad(logits[0, t], store["act"])
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * store["act"]).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=img.shape[1:], mode="bilinear")[0, 0]
        cam = cam / cam.max() if cam.max() > 0 else cam
        out.append(cam.detach().numpy())
    return np.stack(out)


def test_matches_hand_computed_gradcam(tiny_net):
    net, X = tiny_net
    layer = net.module_.features[3]
    got = gradcam(net, X)
    ref = hand_gradcam(net.module_, layer, X)
    assert got.shape == (len(X), 16, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert got.min() >= 0 and got.max() <= 1


def test_explicit_target_and_layer(tiny_net):
    net, X = tiny_net
    ref = hand_gradcam(net.module_, net.module_.features[0], X, target=2)
    np.testing.assert_allclose(gradcam(net, X, target=2, layer="features.0"), ref, atol=1e-5)
    targets = np.arange(len(X)) % 3
    per_sample = np.stack([gradcam(net, X[i:i + 1], target=t)[0] for i, t in enumerate(targets)])
    np.testing.assert_allclose(gradcam(net, X, target=targets, batch_size=5), per_sample,
                               atol=1e-6)


def test_batched_equals_per_sample(tiny_net):
    net, X = tiny_net
    batched = gradcam(net, X, batch_size=7)
    single = np.concatenate([gradcam(net, X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_restores_mode_and_leaves_no_gradients(tiny_net):
    net, X = tiny_net
    net.module_.zero_grad(set_to_none=True)  # training leaves the last step's grads
    net.module_.train()
    net.module_.features[0].weight.requires_grad_(False)
    before = {name: (p.data_ptr(), p.stride(), p.detach().clone())
              for name, p in net.module_.named_parameters()}
    gradcam(net, X[:40])  # more than one CPU chunk
    for name, p in net.module_.named_parameters():  # weights back exactly as they were
        assert (p.data_ptr(), p.stride()) == before[name][:2]
        assert torch.equal(p, before[name][2])
    assert net.module_.training
    assert all(p.grad is None for p in net.module_.parameters())
    assert not net.module_.features[0].weight.requires_grad
    assert net.module_.features[3].weight.requires_grad
    net.module_.eval()
    gradcam(net, X[:4])
    assert not net.module_.training


def test_blank_map_stays_zero():
    class Blind(nn.Module):  # conv output never reaches the logits
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.bias = nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return self.conv(x).mean(dim=(1, 2, 3))[:, None] * 0 + self.bias

    X = np.random.RandomState(0).rand(4, 1, 8, 8).astype(np.float32)
    net = CNNClassifier(Blind, n_classes=2, max_epochs=1).fit(X, [0, 1, 0, 1])
    maps = gradcam(net, X)
    assert np.all(maps == 0)


def test_default_layer_is_last_conv_and_gradcam_layer_param(tiny_net):
    net, X = tiny_net
    np.testing.assert_allclose(gradcam(net, X[:3]), gradcam(net, X[:3], layer="features.3"))
    net.set_params(gradcam_layer="features.0")
    np.testing.assert_allclose(gradcam(net, X[:3]), gradcam(net, X[:3], layer="features.0"))


def test_pipeline_preprocessing_is_applied(tiny_net):
    net, X = tiny_net
    pipe = make_pipeline(FunctionTransformer(lambda a: a * 2.0), net)
    np.testing.assert_allclose(gradcam(pipe, X[:5]), gradcam(net, X[:5] * 2.0), atol=1e-6)


def test_3d_volumes():
    class Net3d(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))

    X = np.random.RandomState(0).rand(6, 1, 4, 8, 8).astype(np.float32)
    net = CNNClassifier(Net3d, n_classes=2, max_epochs=2, random_state=0).fit(X, [0, 1] * 3)
    maps = gradcam(net, X)
    assert maps.shape == (6, 4, 8, 8)
    # reference for one volume, by hand
    x = torch.from_numpy(X[:1])
    act = net.module_.conv(x)
    logits = net.module_.fc(torch.relu(act).mean(dim=(2, 3, 4)))
    grad, = torch.autograd.grad(logits[0, logits.argmax()], act)
    cam = F.relu((grad.mean(dim=(2, 3, 4), keepdim=True) * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(4, 8, 8), mode="trilinear")[0, 0]
    np.testing.assert_allclose(maps[0], (cam / cam.max()).detach().numpy(), atol=1e-5)


def test_errors(tiny_net):
    net, X = tiny_net
    with pytest.raises(ValueError, match="'features.9' is not in TinyNet"):
        gradcam(net, X, layer="features.9")
    with pytest.raises(ValueError, match="image-shaped"):
        gradcam(net, X[:, 0])
    with pytest.raises(ValueError, match="NaN or infinite.*index 3"):
        bad = X.copy()
        bad[3, 0, 0, 0] = np.nan
        gradcam(net, bad)
    with pytest.raises(NotFittedError):
        gradcam(CNNClassifier(n_classes=3), X)
    with pytest.raises(ValueError, match="not in classes_"):
        gradcam(net, X, target=7)
    with pytest.raises(TypeError, match="skorch network"):
        gradcam(object(), X)
