"""torchvision backbones (issue 17, part 3). torchvision does not import beside the CPU
torch 2.13.0 wheel of the main environment, so there these tests skip; .ci/run runs them
in a second environment with torch 2.14.1 and torchvision 0.29.1 (``.bb-venv``), where
under ``CI=true`` a torchvision that fails to import is an error, not a skip."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from xal_sklearn import ActiveLearner, CNNClassifier, dual_criterion_sampling, gradcam, score_pool
from xal_sklearn.backbones import (BACKBONES, BackboneWeightsError, adapt_backbone,
                                   build_backbone)

try:
    import torchvision
except Exception as exc:  # PyPI's torchvision beside the CPU torch wheel fails on import
    if os.environ.get("XAL_BACKBONE_TESTS") == "required":
        raise
    pytest.skip(f"torchvision does not import here ({type(exc).__name__}); .ci/run runs these "
                "in .bb-venv", allow_module_level=True)


@pytest.fixture(scope="module")
def scans():
    from xal_sklearn.datasets import make_lesion_phantoms

    return make_lesion_phantoms(24, 64, shortcut=0.0, random_state=0)


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_backbone_fits_and_explains(scans, name, channels):
    X = np.repeat(scans.X[:12], channels, axis=1)
    net = CNNClassifier(module=name, n_classes=3, max_epochs=1, batch_size=6, random_state=0,
                        roi_loss="dice")
    net.fit(X, scans.y[:12], roi_masks=scans.roi_masks[:12])
    proba = net.predict_proba(X[:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    _, builder_head, layer = BACKBONES[name]
    assert net.module_.get_submodule(builder_head).out_features == 3
    maps = gradcam(net, X[:4])
    assert maps.shape == (4, 64, 64) and np.isfinite(maps).all()
    # the default Grad-CAM layer is the last stage, not the last small convolution
    from xal_sklearn._validation import resolve_layer

    assert resolve_layer(net.module_, None) is net.module_.get_submodule(layer)
    s = score_pool(net, X[12:16] if len(X) > 12 else X[:4], scans.roi_masks[:4],
                   embeddings=True)
    assert s.embeddings.shape[0] == 4


def test_densenet_explains_its_last_dense_block():
    net = build_backbone("densenet121", n_classes=3)
    assert net.default_gradcam_layer == "features.denseblock4"
    x = torch.randn(2, 1, 64, 64)
    seen = {}
    net.get_submodule("features.denseblock4").register_forward_hook(
        lambda m, i, o: seen.update(c=o.shape[1]))  # returns None: the output stays
    net.eval()(x)
    assert seen["c"] == 1024  # the block's output, not a 32-channel growth convolution


def test_grey_scale_first_convolution_sums_the_colour_weights(tmp_path):
    rgb = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(rgb.state_dict(), path)
    grey = build_backbone("resnet18", n_classes=3, in_channels=1, weights=path)
    torch.testing.assert_close(grey.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(grey.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)
    # a grey image gives what the RGB image (g, g, g) gave, up to the head
    g = torch.rand(2, 1, 32, 32)
    rgb.eval(), grey.eval()
    with torch.no_grad():
        torch.testing.assert_close(grey.conv1(g), rgb.conv1(g.repeat(1, 3, 1, 1)))
    net = CNNClassifier(module="resnet18", module__weights=str(path), n_classes=3,
                        max_epochs=1, lr=1e-12, random_state=0)
    net.fit(np.random.rand(6, 1, 32, 32).astype(np.float32), np.arange(6) % 3)
    torch.testing.assert_close(net.module_.layer1[0].conv1.weight.float(),
                               rgb.layer1[0].conv1.weight, atol=1e-6, rtol=0)


def test_weights_that_do_not_fit_are_named(tmp_path):
    other = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), other)
    with pytest.raises(BackboneWeightsError, match="resnet50.pth does not fit torchvision's "
                                                   "resnet18: shapes differ"):
        build_backbone("resnet18", weights=other)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"no")
    with pytest.raises(BackboneWeightsError, match="junk.pth is not a torch state dict"):
        build_backbone("resnet18", weights=junk)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_backbone("resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="Unknown backbone 'resnet19'; choose one of resnet18"):
        CNNClassifier(module="resnet19", n_classes=3).fit(np.zeros((4, 1, 32, 32), np.float32),
                                                          np.arange(4) % 3)


def test_a_user_built_instance_is_adapted_on_a_copy(scans):
    mine = torchvision.models.resnet18(weights=None)
    net = CNNClassifier(module=mine, n_classes=3, max_epochs=1, batch_size=6, random_state=0)
    net.fit(scans.X[:12], scans.y[:12])
    assert mine.conv1.in_channels == 3 and mine.fc.out_features == 1000  # untouched
    assert net.module_.conv1.in_channels == 1 and net.module_.fc.out_features == 3
    assert gradcam(net, scans.X[:2]).shape == (2, 64, 64)
    adapted = adapt_backbone(torchvision.models.efficientnet_b0(weights=None), 4, 2)
    assert adapted.features[0][0].in_channels == 2 and adapted.classifier[1].out_features == 4


def test_backbone_learner_round_trip(scans, tmp_path):
    net = CNNClassifier(module="efficientnet_b0", n_classes=3, max_epochs=1, batch_size=6,
                        random_state=0)
    learner = ActiveLearner(net, dual_criterion_sampling, X_training=scans.X[:12],
                            y_training=scans.y[:12], random_state=0)
    idx, _ = learner.query(scans.X[12:], n_instances=3, roi_masks=scans.roi_masks[12:])
    learner.save(tmp_path / "l")
    back = ActiveLearner.load(tmp_path / "l", net, dual_criterion_sampling,
                              X_training=scans.X[:12], y_training=scans.y[:12])
    np.testing.assert_allclose(back.predict_proba(scans.X[12:16]),
                               learner.predict_proba(scans.X[12:16]), atol=1e-5)


def test_a_plain_network_is_left_alone():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    from xal_sklearn.backbones import copy_adapted

    plain = Plain()
    assert copy_adapted(plain, 3, 1) is plain


def test_a_backbone_warm_starts_from_the_pool(scans, tmp_path):
    from xal_sklearn import pretrain_encoder

    template = CNNClassifier(module="resnet18", n_classes=3, max_epochs=1, batch_size=6,
                             random_state=0)
    weights = pretrain_encoder(scans.X, module=template, epochs=1, batch_size=8,
                               random_state=0, progress=False)
    assert "fc.weight" not in weights.state and "conv1.weight" in weights.state
    net = template.set_params(init_weights=weights.save(tmp_path / "r18.pt"))
    net.fit(scans.X[:12], scans.y[:12])
    assert net.module_.conv1.weight.shape == (64, 1, 7, 7)


def test_a_campaign_with_a_backbone(tmp_path, scans):
    import csv

    from PIL import Image

    from xal_sklearn.campaign import Campaign

    root = tmp_path / "scans"
    root.mkdir()
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image"])
        for i in range(12):
            Image.fromarray(np.round(scans.X[i, 0] * 255).astype(np.uint8)).save(
                root / f"{i:02d}.png")
            w.writerow([f"{i:02d}.png"])
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    c = Campaign.create(tmp_path / "study", root, ["a", "b", "c"], manifest=root / "manifest.csv",
                        image_size=64, epochs=1, module="resnet18", module_weights=weights,
                        document_root=tmp_path)
    net = Campaign.open(c.folder)._template()
    assert net.module == "resnet18" and net.get_params()["module__weights"] == str(weights)
    net.fit(scans.X[:6], np.array(["a", "b", "c"] * 2))
    assert net.module_.conv1.in_channels == 1
