import csv

import numpy as np
import pytest
import torch
from torch import nn

from xal_sklearn import CNNClassifier
from xal_sklearn.datasets import make_lesion_phantoms

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def phantoms():
    """Small phantoms whose corner marker always agrees with the label."""
    return make_lesion_phantoms(240, image_size=32, n_classes=3, shortcut=1.0, random_state=0)


@pytest.fixture(scope="session")
def fitted_net(phantoms):
    net = CNNClassifier(n_classes=3, max_epochs=8, random_state=0, batch_size=32)
    return net.fit(phantoms.X[:160], phantoms.y[:160])


class TinyNet(nn.Module):
    """Small net with in-place ReLUs and a tuple-free head, for hand checks."""

    def __init__(self, in_channels=1, n_classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, n_classes))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def tiny_net():
    rng = np.random.RandomState(0)
    X = rng.rand(24, 1, 16, 16).astype(np.float32)
    y = np.arange(24) % 3
    return CNNClassifier(TinyNet, n_classes=3, max_epochs=2, random_state=0).fit(X, y), X


@pytest.fixture
def rng():
    return np.random.RandomState(42)


def write_scan_folder(d, root, masks=True, manifest="manifest.csv"):
    """Phantoms ``d`` as a folder of PNG scans (``img/NN.png``) with their lesion masks
    (``roi/NN.png``, if ``masks``) and a manifest of both: a pool as campaigns read it.
    Returns the manifest rows' image paths, in ``d``'s order."""
    from PIL import Image

    (root / "img").mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "roi").mkdir(exist_ok=True)
    images = []
    with open(root / manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask"] if masks else ["image"])
        for i in range(len(d.X)):
            name = f"{i:02d}.png"
            Image.fromarray(np.round(d.X[i, 0] * 255).astype(np.uint8)).save(root / "img" / name)
            if masks:
                Image.fromarray(d.roi_masks[i].astype(np.uint8) * 255).save(root / "roi" / name)
            w.writerow([f"img/{name}"] + ([f"roi/{name}"] if masks else []))
            images.append(f"img/{name}")
    return images
