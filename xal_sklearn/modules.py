"""Default network for :class:`~xal_sklearn.CNNClassifier`, and a layout helper."""

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from ._names import DEFAULT_CONTEXT_CHANNELS, DEFAULT_N_FILTERS, context_split

__all__ = ["CPU_CHUNK_SIZE", "DEFAULT_CONTEXT_CHANNELS", "DEFAULT_N_FILTERS", "GlobalAvgPool2d",
           "SmallCNN", "channels_last_weights", "context_split", "to_channels_last"]

#: Inference on the CPU (scoring, embeddings) runs batches in chunks of this many images
#: with 2-D conv weights in channels-last layout: activations then stay in cache, which
#: measured 2-3x faster than NCHW batches of 64 (docs/benchmarks.md).
CPU_CHUNK_SIZE = 16


def to_channels_last(module):
    """Put the 2-D conv weights (4-D parameters) of ``module`` in channels-last layout.

    In place; other parameters (3-D convolutions included) are left as they are.
    Returns ``[(parameter, previous tensor), ...]`` for the ones that moved.
    """
    moved = []
    for p in module.parameters():
        if is_lazy(p) or p.dim() != 4:
            continue
        # compare strides, not p.is_contiguous(channels_last): with one input channel the
        # plain strides also count as channels-last, yet oneDNN reads the layout from the
        # strides and would give the first, largest, layer plain-layout outputs (measured
        # 7x slower max-pool)
        _, c, h, w = p.shape
        if p.stride() == (c * h * w, 1, w * c, c):
            continue  # already there: no copy on every prediction
        moved.append((p, p.data))
        p.data = torch.empty_like(p.data, memory_format=torch.channels_last).copy_(p.data)
    return moved


@contextmanager
def channels_last_weights(module):
    """Within the block, 2-D conv weights (4-D parameters) are in channels-last layout.

    On the CPU, inference in this layout measured 1.2-2x faster (docs/benchmarks.md).
    Used for prediction and scoring of any module; the original tensors are put back
    on exit, untouched. (:class:`~xal_sklearn.CNNClassifier` keeps its own CPU modules
    in this layout for training too, see :func:`to_channels_last`.)
    """
    moved = []
    try:
        moved = to_channels_last(module)
        yield module
    finally:
        for p, data in moved:
            p.data = data


class GlobalAvgPool2d(nn.Module):
    """Mean over the two spatial axes, keeping them as size 1: ``(N, C, 1, 1)``.

    The same values as ``nn.AdaptiveAvgPool2d(1)`` (bit for bit), but computed as
    ``sum / (H * W)``: the gradient is then a broadcast view, which keeps the
    channels-last layout of the layer below. ``AdaptiveAvgPool2d``'s gradient is
    a new tensor in the plain layout, and a ReLU backward that mixes the two
    layouts measured 30x slower than one that does not.
    """

    def forward(self, x):
        return x.sum(dim=(-2, -1), keepdim=True) / (x.shape[-2] * x.shape[-1])


class SmallCNN(nn.Module):
    """A small 2-D CNN for ``(N, C, H, W)`` images of any size.

    Three blocks of ``Conv2d -> BatchNorm2d -> ReLU`` (the first two with a 2x2
    max-pool), then global average pooling and a linear layer that returns
    logits. Global pooling makes the network independent of the image size, and
    the last convolution keeps a quarter of the input resolution, so Grad-CAM
    maps are not too coarse.

    In the pooled blocks the max-pool comes before the ReLU
    (``Conv2d -> BatchNorm2d -> MaxPool2d -> ReLU``). That is the same function
    with the same gradients, because max-pooling commutes with any non-decreasing
    function, ties included (training gives bit-identical weights), but the ReLU
    then runs on a quarter of the values: about 5 % of a CPU training step.
    Parameter names are those of the other order, so saved weights load.

    With ``context_channels > 0`` the last block is split in two blocks side by
    side, both fed by the block before: ``features``' last block keeps
    ``n_filters[-1] - context_channels`` channels, and ``context`` has the rest.
    The linear head reads both, pooled. Grad-CAM (``default_gradcam_layer``), and
    so the ROI loss of :class:`~xal_sklearn.CNNClassifier` and the misalignment
    score, read only the first; ``context`` is left to the cross-entropy. On the
    brain-MRI slices the surroundings of the tumour carry the class about as well
    as the whole image, so a single map taught to sit on the tumour takes
    evidence away; the context branch keeps a way in for it (docs/results.md,
    "A context branch beside the taught one"). Same parameter count as without.
    The default, a quarter (16 of 64 channels), was chosen on validation groups: with the
    default ROI loss it kept accuracy within about a point of cross-entropy
    training on plain MRI while the taught map moved onto the tumour, and kept
    the gain of ROI training on MRI with an injected shortcut, where a wider
    context branch learnt the shortcut instead. In active learning with a
    shortcut in the image's border the branch could still read it: there the ROI
    loss cost 1.3 points on top of dual selection, where the network without the
    branch gained 1.5 (docs/results.md). ``context_channels=0`` is the
    network from before the branch existed (weights saved from it load only
    into it; results folders and campaigns that recorded none rebuild it).

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
    context_channels : int or float, default=0.25
        Channels of the last block that go to the ``context`` branch, which
        Grad-CAM does not read: a whole number from 0 (no branch) to
        ``n_filters[-1] - 1``, or a share of ``n_filters[-1]`` as a float in
        [0, 1) (rounded; the default is 16 of 64).

    Attributes
    ----------
    features : torch.nn.Sequential
        The convolutional part; ``features.<i>`` are the module paths that
        ``gradcam_layer`` accepts.
    context : torch.nn.Sequential or None
        The context branch (None without one).
    classifier : torch.nn.Sequential
        Pooling and the linear head.
    default_gradcam_layer : str
        The last convolution of ``features`` (read by :func:`~xal_sklearn.gradcam`,
        scoring and the ROI loss when no layer is given).
    """

    def __init__(self, in_channels=1, n_classes=2, n_filters=DEFAULT_N_FILTERS, dropout=0.0,
                 context_channels=DEFAULT_CONTEXT_CHANNELS):
        super().__init__()
        n_filters = tuple(n_filters)
        if not n_filters:
            raise ValueError("n_filters must name at least one block.")
        context_channels = context_split(context_channels, n_filters[-1])
        widths = n_filters[:-1] + (n_filters[-1] - context_channels,)
        layers = []
        prev = in_channels
        for i, width in enumerate(widths):
            if i == len(widths) - 1:
                trunk_channels, self._trunk_end = prev, len(layers)
            layers += self._block(prev, width, pool=i < len(widths) - 1 and i < 2)
            prev = width
        self.features = nn.Sequential(*layers)
        self.default_gradcam_layer = f"features.{self._trunk_end}"
        self.context = None
        if context_channels:
            self.context = nn.Sequential(*self._block(trunk_channels, context_channels,
                                                      pool=False))
        self.classifier = nn.Sequential(
            GlobalAvgPool2d(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(prev + context_channels, n_classes),
        )

    @staticmethod
    def _block(c_in, c_out, pool):
        return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out), *([nn.MaxPool2d(2)] if pool else []), nn.ReLU()]

    def forward(self, x):
        if self.context is None:
            return self.classifier(self.features(x))
        for i, layer in enumerate(self.features):
            if i == self._trunk_end:
                trunk = x  # what the last block and the context branch both read
            x = layer(x)
        taught = x
        # pooled before they are joined: the same logits as pooling the joined maps,
        # without copying them (and their gradients keep the channels-last layout)
        pool = self.classifier[0]
        return self.classifier(torch.cat([pool(taught), pool(self.context(trunk))], dim=1))
