"""Training with ROIs through skorch's hooks: the attention loss's step, for any skorch net.

:class:`ROITrainingMixin` is what :class:`~xal_sklearn.CNNClassifier` adds to skorch's
``NeuralNetClassifier`` to learn from regions of interest: it checks the masks ``fit``
is given and the Grad-CAM layer the loss reads, and overrides skorch's own extension
points (``train_step_single``, ``train_step``, ``get_loss``) so that a batch that
carries ROIs adds the attention term of :mod:`xal_sklearn.roi_loss` to the
cross-entropy, weighed (``roi_weight``, ``roi_balance``), from ``roi_warmup`` on, with
its gradient projected off the cross-entropy's or applied apart (``roi_conflict``).
The losses themselves live in :mod:`~xal_sklearn.roi_loss`; this module is the
training loop's side. The net it is mixed into provides the settings (``roi_loss``,
``roi_weight``, ``roi_balance``, ``roi_dilation``, ``roi_warmup``, ``roi_conflict``,
``gradcam_layer``) and ``infer``.
"""

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from skorch.dataset import unpack_data

from ._validation import binarize_masks, check_roi_masks, probe_forward, resolve_layer
from .roi_loss import (GRADCAM_LOSSES, ROI_LOSSES, balanced_term, roi_loss_term, split_gradients,
                       step_term_apart, warmup_epochs)

__all__ = ["ROITrainingMixin"]


class ROITrainingMixin:
    """The attention loss in a skorch net's training step (see the module's docstring).

    Put it before the skorch class: ``class Net(ROITrainingMixin, NeuralNetClassifier)``.
    Batches without ROIs (``roi_loss=None``, before the warm-up ends, or data without
    masks) train as skorch trains them.
    """

    def _check_fit_masks(self, roi_masks, X):
        if roi_masks is None:
            return None
        if self.roi_loss is None:
            warnings.warn("roi_masks are ignored because roi_loss=None; set roi_loss "
                          f"(one of {', '.join(ROI_LOSSES)}) to train with them.", UserWarning,
                          stacklevel=4)
            return None
        if isinstance(X, torch.utils.data.Dataset):
            raise TypeError("roi_masks cannot be combined with a torch Dataset X; pass arrays.")
        spatial = X.shape[2:]
        if isinstance(roi_masks, (list, tuple)) and any(m is None for m in roi_masks):
            return check_roi_masks(roi_masks, len(X), spatial)[0]
        if isinstance(roi_masks, torch.Tensor):
            roi_masks = roi_masks.detach().cpu().numpy()
        m = binarize_masks(np.asarray(roi_masks))
        if m.ndim == len(spatial) + 2 and m.shape[1] == 1:
            m = m[:, 0]
        if m.ndim >= 1 and len(m) != len(X):
            raise ValueError(f"roi_masks has {len(m)} masks but X has {len(X)} images.")
        ratios = {round(a / b, 6) for a, b in zip(m.shape[1:], spatial)}
        if m.ndim != len(spatial) + 1 or len(ratios) != 1:
            raise ValueError(
                f"roi_masks must have shape (n_samples, *mask_spatial) with the images' aspect "
                f"ratio (images: {tuple(spatial)}); got {m.shape}.")
        return m

    def _check_attention_layer(self):
        """Refuse a Grad-CAM layer without spatial output before any training step."""
        if self.roi_loss not in GRADCAM_LOSSES:
            return
        layer = resolve_layer(self.module_, self.gradcam_layer)
        shape = getattr(self, "image_shape_", None)
        if shape is None:
            return
        y = probe_forward(self.module_, shape, layer)
        if not isinstance(y, torch.Tensor) or y.dim() != len(shape) + 1:
            raise ValueError(
                f"roi_loss={self.roi_loss!r} needs a convolutional Grad-CAM layer whose output "
                f"has {len(shape) - 1} spatial axes; {self.gradcam_layer!r} gives "
                f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}.")

    def _roi_active(self):
        return (self.roi_loss is not None
                and len(self.history) > warmup_epochs(self.roi_warmup, self.max_epochs))

    def train_step_single(self, batch, **fit_params):
        Xi, yi = unpack_data(batch)
        if not (isinstance(Xi, Mapping) and "roi" in Xi and self._roi_active()):
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        x = Xi["x"].to(self.device)
        if self.roi_loss == "rrr":
            x = x.detach().requires_grad_(True)
        captured = {}
        handle = None
        if self.roi_loss in GRADCAM_LOSSES:
            layer = resolve_layer(self.module_, self.gradcam_layer)
            def keep(module, inputs, output):
                captured["A"] = output
                return output.clone()  # an in-place op after the layer must not alter A

            handle = layer.register_forward_hook(keep)
        try:
            y_pred = self.infer(x, **fit_params)
        finally:
            if handle is not None:
                handle.remove()
        loss = self.get_loss(y_pred, yi, X=dict(Xi, x=x, activations=captured.get("A")),
                             training=True)
        if self.roi_conflict == "sum":
            loss.backward()
        else:
            # the criterion alone (skorch's get_loss); the rest of the loss is the term
            self._backward_projected(super().get_loss(y_pred, yi, training=True), loss)
        return {"loss": loss, "y_pred": y_pred}

    def _backward_projected(self, ce, loss):
        """Accumulate the gradient of ``loss`` (cross-entropy ``ce`` plus the attention
        term) into the trainable parameters' ``.grad``, the term's part projected
        (``roi_conflict="project"``); with ``"separate"`` only the cross-entropy's, the
        term's kept for :meth:`train_step` to apply after the optimizer's step."""
        params = [p for p in self.module_.parameters() if p.requires_grad]
        g_ce, g_term = split_gradients(params, ce, loss)
        if self.roi_conflict == "separate":
            # a closure the optimizer calls again replaces, never adds to, what is kept
            self._term_grads = list(zip(params, g_term))
            steps = g_ce
        else:
            steps = [a + b for a, b in zip(g_ce, g_term)]
        for p, g in zip(params, steps):
            p.grad = g if p.grad is None else p.grad + g

    def train_step(self, batch, **fit_params):
        """skorch's optimizer step; with ``roi_conflict="separate"`` the attention
        term's gradient is then applied apart (``roi_loss.step_term_apart``)."""
        self._term_grads = None
        try:
            step = super().train_step(batch, **fit_params)
            if self._term_grads:
                step_term_apart(self.optimizer_, self._term_grads)
        finally:
            self._term_grads = None  # an interrupted step leaves nothing to apply later
        return step

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Cross-entropy, plus the attention loss weighed by ``roi_weight`` and
        ``roi_balance`` while training with ROIs."""
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if not (training and isinstance(X, Mapping) and "activations" in X):
            return loss
        logits = y_pred[0] if isinstance(y_pred, (tuple, list)) else y_pred
        term = roi_loss_term(
            self.roi_loss, x=X["x"], logits=logits, activations=X["activations"],
            target=y_true.to(logits.device).long(), masks=X["roi"].to(logits.device),
            has_roi=X["has_roi"].to(logits.device), dilation=self.roi_dilation,
            forward=self._counterexample_logits)
        return loss + balanced_term(term, loss, float(self.roi_weight), self.roi_balance)

    def _counterexample_logits(self, x):
        y_pred = self.infer(x)
        return y_pred[0] if isinstance(y_pred, (tuple, list)) else y_pred
