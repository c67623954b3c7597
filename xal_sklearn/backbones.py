"""Backbones users bring: torchvision's ResNet, DenseNet and EfficientNet, for grey-scale scans.

``CNNClassifier(module="densenet121", module__weights="densenet121-imagenet.pth")``
builds the torchvision network with random weights (nothing is ever downloaded),
loads the local weight file if one is given (a state dict as torchvision
publishes them, read with ``weights_only=True``), and then adapts it the usual
way:

* the first convolution takes the images' channels: for one channel its weights
  are summed over the three colour channels (a grey image ``g`` then gives the
  response the RGB image ``(g, g, g)`` gave); for other counts their mean is
  spread over the channels;
* the classification head is a fresh ``nn.Linear`` sized to the classes;
* the network names the layer Grad-CAM explains by default
  (``default_gradcam_layer``, read by :func:`~xal_sklearn.gradcam`, scoring and
  the ROI losses): the output of the last stage, e.g. DenseNet's last dense
  block (1024 channels), not its last 32-channel convolution.

:func:`adapt_backbone` does the same to a torchvision or timm module instance
the user built. These networks downsample 32x: at 64 px Grad-CAM sees a 2 x 2
grid, at 224 px 7 x 7.

torchvision is an optional dependency (``pip install 'xal-sklearn[backbones]'``).
It must match the installed torch: PyPI's torchvision does not import beside
the CPU-only torch 2.13.0 wheel our machines use; ``torch==2.14.1
torchvision==0.29.1`` do.
"""

import copy
from pathlib import Path

import torch
from torch import nn

__all__ = ["BACKBONES", "BackboneWeightsError", "adapt_backbone", "build_backbone"]

#: name -> (the torchvision builder's name, the module path of its head, default Grad-CAM layer)
BACKBONES = {
    "resnet18": ("resnet18", "fc", "layer4"),
    "resnet50": ("resnet50", "fc", "layer4"),
    "densenet121": ("densenet121", "classifier", "features.denseblock4"),
    "efficientnet_b0": ("efficientnet_b0", "classifier.1", "features.8"),
}


class BackboneWeightsError(ValueError):
    """A ``module__weights`` file that does not fit the backbone."""


def _torchvision():
    try:
        import torchvision
    except Exception as exc:  # ImportError, or torchvision's own operator registration failing
        raise ImportError(
            "Backbones need torchvision, which could not be imported "
            f"({type(exc).__name__}: {exc}). Install the extra, `pip install "
            "'xal-sklearn[backbones]'`, with a torchvision built for your torch: PyPI's "
            "does not import beside the CPU-only torch 2.13.0 wheel; torch==2.14.1 "
            "torchvision==0.29.1 work together.") from exc
    return torchvision


def _first_conv(module):
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError(f"{type(module).__name__} has no Conv2d layer to take the images.")


def _set_submodule(module, path, new):
    parent, _, name = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)


def _adapt_first_conv(conv, in_channels):
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode)
    with torch.no_grad():
        w = conv.weight
        if in_channels == 1:
            new.weight.copy_(w.sum(dim=1, keepdim=True))
        else:  # the mean over the old channels on each new one keeps the response's scale
            new.weight.copy_(w.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
                             * conv.in_channels / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def adapt_backbone(module, n_classes, in_channels=1, head=None, gradcam_layer=None):
    """Fit an image network to ``in_channels`` and ``n_classes``, the usual way.

    Parameters
    ----------
    module : nn.Module
        A torchvision or timm classifier (or any with a first ``Conv2d`` and a
        last ``nn.Linear``). Changed in place and returned.
    n_classes : int
    in_channels : int, default=1
        The first convolution is rebuilt for this many channels (for 1: its
        weights summed over the colour channels).
    head : str, optional
        Module path of the classification layer; default the last ``nn.Linear``.
    gradcam_layer : str, optional
        Stored as ``module.default_gradcam_layer`` for Grad-CAM.
    """
    from .embedding import find_head

    first = _first_conv(module)
    path = next(n for n, m in module.named_modules() if m is first)
    _set_submodule(module, path, _adapt_first_conv(first, in_channels))
    if head is None:
        last = find_head(module)
        head = next(n for n, m in module.named_modules() if m is last)
    old = module.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"{head} of {type(module).__name__} is a {type(old).__name__}, "
                         "not the nn.Linear classification head.")
    _set_submodule(module, head, nn.Linear(old.in_features, int(n_classes)))
    if gradcam_layer is not None:
        module.get_submodule(gradcam_layer)  # exists, or AttributeError names it
        module.default_gradcam_layer = gradcam_layer
    return module


def _load_weights(net, name, weights):
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"module__weights: no file at {path} (weights are never "
                                "downloaded; see the install guide for getting them offline).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneWeightsError(f"module__weights {path} is not a torch state dict of "
                                   f"tensors (torch.load said: {exc}).") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a checkpoint that wraps the state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise BackboneWeightsError(f"module__weights {path} does not hold a mapping of "
                                   "parameter names to tensors.")
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)}, {name} {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or shapes:
        parts = [f"shapes differ ({', '.join(shapes[:3])})" if shapes else "",
                 f"{len(missing)} of {name}'s tensors are missing (e.g. {missing[0]})"
                 if missing else "",
                 f"{len(extra)} tensors are not {name}'s (e.g. {extra[0]})" if extra else ""]
        raise BackboneWeightsError(f"module__weights {path} does not fit torchvision's "
                                   f"{name}: " + "; ".join(p for p in parts if p) + ".")
    net.load_state_dict(state)


def build_backbone(name, n_classes=2, in_channels=1, weights=None):
    """A torchvision backbone for ``in_channels``-channel images and ``n_classes``.

    Parameters
    ----------
    name : {"resnet18", "resnet50", "densenet121", "efficientnet_b0"}
    n_classes : int, default=2
    in_channels : int, default=1
    weights : path-like, optional
        A local state-dict file for torchvision's 3-channel, 1000-class network
        (the ImageNet files torchvision publishes, e.g.
        ``densenet121-a639ec97.pth``), loaded before the network is adapted.
        Code here never downloads.

    Returns
    -------
    nn.Module with ``default_gradcam_layer`` set.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)} (or "
                         "pass a module class or instance).")
    builder, head, layer = BACKBONES[name]
    tv = _torchvision()
    net = getattr(tv.models, builder)(weights=None)
    if weights is not None:
        _load_weights(net, name, weights)
    return adapt_backbone(net, n_classes, in_channels, head=head, gradcam_layer=layer)


def copy_adapted(module, n_classes, in_channels):
    """``module`` if it fits the data; else an adapted copy (the user's object stays as it is).

    Only 2-D networks with a first ``Conv2d`` and a last ``nn.Linear`` are adapted;
    anything else is returned unchanged (and fails, if it must, on the first batch).
    """
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if (not convs or not linears or any(isinstance(m, nn.Conv3d) for m in module.modules())
            or (convs[0].in_channels == in_channels and linears[-1].out_features == n_classes)):
        return module
    return adapt_backbone(copy.deepcopy(module), n_classes, in_channels)
