"""Grad-CAM through Captum, batched, for fitted skorch networks."""

from contextlib import nullcontext

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam

from ._pool import iter_pool, pool_length, progress_bar
from ._validation import check_input_shape, resolve_estimator, resolve_layer
from .modules import CPU_CHUNK_SIZE, channels_last_weights

__all__ = ["gradcam"]


class GradCAMEngine:
    """One forward pass per batch giving both the logits and the Grad-CAM maps.

    Captum's ``LayerGradCam`` is given a forward function that runs the
    network once, keeps the logits, and returns the logit of each sample's
    target class (its predicted class unless a target is given). Captum then
    backpropagates from those logits to the chosen layer only. While the
    engine is open, the module is in eval mode and its parameters do not
    require gradients, so autograd records nothing before the layer and no
    gradient ever lands on a parameter; both are restored on exit.
    """

    #: On the CPU, batches run in chunks of this many images with 2-D conv weights in
    #: channels-last layout (:data:`~xal_sklearn.modules.CPU_CHUNK_SIZE`). None runs
    #: whole batches in the module's own layout, as on a GPU.
    cpu_chunk_size = CPU_CHUNK_SIZE

    def __init__(self, net, layer=None):
        self.net = net
        self.module = net.module_
        if layer is None:
            layer = getattr(net, "gradcam_layer", None)
        self.layer = resolve_layer(self.module, layer)
        self.device = torch.device(net.device) if net.device is not None else torch.device("cpu")
        self.chunk_size = self.cpu_chunk_size if self.device.type == "cpu" else None
        self.grid_shape = None  # spatial shape of the layer's output, set by the first batch
        self._checked_shapes = set()

    def __enter__(self):
        self._was_training = self.module.training
        params = list(self.module.parameters())
        self._requires_grad = [(p, p.requires_grad) for p in params]
        self.module.eval()
        for p in params:
            p.requires_grad_(False)
        self._layout = channels_last_weights(self.module) if self.chunk_size else nullcontext()
        self._layout.__enter__()
        return self

    def __exit__(self, *exc):
        self._layout.__exit__(*exc)
        for p, flag in self._requires_grad:
            p.requires_grad_(flag)
        self.module.train(self._was_training)
        return False

    def __call__(self, x, target=None):
        """Grad-CAM of a batch.

        Parameters
        ----------
        x : tensor (B, C, H, W)
        target : None or int tensor (B,) of column indices

        Returns
        -------
        logits : tensor (B, n_classes), detached
        cams : tensor (B, H, W), ReLU-ed, upsampled to the input size
            (bilinear / trilinear), each map divided by its maximum so it lies
            in [0, 1]; an all-zero map stays zero.
        """
        if tuple(x.shape[1:]) not in self._checked_shapes:
            check_input_shape(self.net, x.shape[1:])
            self._checked_shapes.add(tuple(x.shape[1:]))
        x = x.to(self.device)
        step = self.chunk_size
        if step and len(x) > step:
            parts = [self(x[i:i + step], None if target is None else target[i:i + step])
                     for i in range(0, len(x), step)]
            return tuple(torch.cat(p) for p in zip(*parts))
        if step and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        kept = {}

        def target_logit(inputs):
            out = self.module(inputs)
            if isinstance(out, (tuple, list)):
                out = out[0]
            kept["logits"] = out
            cols = out.argmax(1) if target is None else target.to(out.device)
            return out.gather(1, cols.view(-1, 1))

        cam = LayerGradCam(target_logit, self.layer).attribute(
            x, target=0, relu_attributions=True
        )
        if cam.dim() != x.dim():
            raise ValueError(
                f"The Grad-CAM layer output has {cam.dim() - 2} spatial dimension(s) but the "
                f"input has {x.dim() - 2}; choose a convolutional layer."
            )
        self.grid_shape = tuple(cam.shape[2:])
        mode = "bilinear" if x.dim() == 4 else "trilinear"
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=mode)[:, 0]
        peak = cam.reshape(len(cam), -1).amax(1).view(-1, *([1] * (cam.dim() - 1)))
        cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny),
                          torch.zeros_like(cam))
        return kept["logits"].detach(), cam.detach()


def target_columns(net, target, n_samples):
    """Class label(s) -> tensor of column indices (or None for 'predicted')."""
    if target is None:
        return None
    labels = np.broadcast_to(np.asarray(target), (n_samples,))
    return torch.from_numpy(net._encode_labels(labels))


def gradcam(estimator, X, target=None, layer=None, batch_size=None, progress=None):
    """Grad-CAM maps of a fitted network at input resolution.

    Parameters
    ----------
    estimator : fitted CNNClassifier, Pipeline ending in one, or active learner
    X : array-like (N, C, H, W) or (N, C, D, H, W), memmap, or torch Dataset
        Images; a Pipeline's preceding steps are applied first.
    target : None, class label, or array-like of N class labels, default=None
        Class to explain per sample. None explains the *predicted* class,
        which is what active learning can use: the pool has no true labels.
    layer : str or torch.nn.Module, optional
        Layer to explain; default the estimator's ``gradcam_layer``, else the
        last ``Conv2d``/``Conv3d``.
    batch_size : int, optional
        Default: the estimator's ``batch_size``.
    progress : bool or None, default=None
        Show a tqdm bar (None: only on a terminal).

    Returns
    -------
    ndarray of float32, shape (N, H, W) or (N, D, H, W)
        ReLU-ed Grad-CAM (Captum ``LayerGradCam``), upsampled to the input
        size, each map scaled to [0, 1] by its maximum (an all-zero map stays
        zero).
    """
    net, preprocess = resolve_estimator(estimator)
    n = pool_length(X)
    targets = target_columns(net, target, n)
    batch_size = int(batch_size or net.batch_size)
    maps = []
    with GradCAMEngine(net, layer) as engine:
        batches = iter_pool(X, None, batch_size, preprocess, name="X")
        for x, _, _, start in progress_bar(batches, progress, -(-n // batch_size), "Grad-CAM"):
            t = None if targets is None else targets[start:start + len(x)]
            maps.append(engine(x, t)[1].cpu().numpy())
    return np.concatenate(maps).astype(np.float32, copy=False)
