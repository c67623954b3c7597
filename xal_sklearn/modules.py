"""Default network for :class:`~xal_sklearn.CNNClassifier`, and a layout helper."""

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.parameter import is_lazy

__all__ = ["SmallCNN", "channels_last_weights"]


@contextmanager
def channels_last_weights(module):
    """Within the block, 2-D conv weights (4-D parameters) are in channels-last layout.

    On the CPU, inference in this layout measured 1.2-2x faster (docs/benchmarks.md);
    training did not gain, so it is used for prediction and scoring only. The original
    tensors are put back on exit, untouched.
    """
    saved = []
    try:
        for p in module.parameters():
            if not is_lazy(p) and p.dim() == 4:
                saved.append((p, p.data))
                p.data = p.data.contiguous(memory_format=torch.channels_last)
        yield module
    finally:
        for p, data in saved:
            p.data = data


class SmallCNN(nn.Module):
    """A small 2-D CNN for ``(N, C, H, W)`` images of any size.

    Three blocks of ``Conv2d -> BatchNorm2d -> ReLU`` (the first two followed by
    a 2x2 max-pool), then global average pooling and a linear layer that returns
    logits. Global pooling makes the network independent of the image size, and
    the last convolution keeps a quarter of the input resolution, so Grad-CAM
    maps are not too coarse.

    Parameters
    ----------
    in_channels : int, default=1
        Number of image channels.
    n_classes : int, default=2
        Number of output logits.
    n_filters : tuple of int, default=(16, 32, 64)
        Channels of the convolution blocks.
    dropout : float, default=0.0
        Dropout probability before the linear layer.

    Attributes
    ----------
    features : torch.nn.Sequential
        The convolutional part; ``features.<i>`` are the module paths that
        ``gradcam_layer`` accepts.
    classifier : torch.nn.Sequential
        Pooling and the linear head.
    """

    def __init__(self, in_channels=1, n_classes=2, n_filters=(16, 32, 64), dropout=0.0):
        super().__init__()
        layers = []
        prev = in_channels
        for i, width in enumerate(n_filters):
            layers += [
                nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            if i < len(n_filters) - 1 and i < 2:
                layers.append(nn.MaxPool2d(2))
            prev = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(prev, n_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
