"""Attention losses that teach a network to look inside the expert's region of interest.

Each loss compares, for every training sample that has an ROI, where the network
looks with where the expert says the evidence is, and is added to the
cross-entropy by :class:`~xal_sklearn.CNNClassifier` (``roi_loss=``,
``roi_weight=``). ``ROI_LOSSES`` is the registry of choices:

* ``"dice"``: ``1 - soft Dice`` between the Grad-CAM map of the *true* class at
  the Grad-CAM layer (divided by its maximum) and the mask brought to that
  layer's grid -- the loss of the reference method;
* ``"outside"``: the share of the Grad-CAM's positive mass that falls outside
  the mask (GradMask / RES family);
* ``"rrr"``: "right for the right reasons" (Ross et al., 2017): the squared
  input gradient of the summed log-probabilities, summed over pixels outside
  the mask.

**First order.** The Grad-CAM channel weights (spatial means of the gradient of
the class logit at the layer) are computed with autograd and then treated as
constants: the loss differentiates through the layer's activations only. For a
network that ends in global average pooling and a linear layer (such as
:class:`~xal_sklearn.SmallCNN`) the weights are the head's weights and do not
depend on anything below the layer, so the gradient for every parameter below
the layer is exact; only the second path into the head's own weights is
dropped. This costs one extra backward pass through the head instead of a
double backward through the whole network. ``"rrr"`` needs the gradient of an
input gradient, so it uses double backpropagation (about 2-3x the cost).

Masks of any resolution with the images' aspect ratio are brought to the
attention grid by area averaging (a cell's value is the share of its pixels in
the ROI) and can be grown by ``dilation`` cells; samples without an ROI add
nothing, so a batch without any ROI gives exactly the cross-entropy.
"""

import torch
import torch.nn.functional as F

__all__ = ["ROI_LOSSES", "check_roi_loss", "gradcam_from_activations", "masks_to_grid",
           "roi_loss_term"]

ROI_LOSSES = ("dice", "outside", "rrr")


def check_roi_loss(roi_loss, roi_weight):
    """Validate ``roi_loss`` / ``roi_weight``; return the weight as a float."""
    if roi_loss is not None and roi_loss not in ROI_LOSSES:
        raise ValueError(f"Unknown roi_loss {roi_loss!r}; choose one of "
                         f"{', '.join(ROI_LOSSES)} or None.")
    try:
        weight = float(roi_weight)
    except (TypeError, ValueError):
        raise ValueError(f"roi_weight must be a number >= 0, got {roi_weight!r}.") from None
    if not weight >= 0 or weight == float("inf"):  # also refuses NaN
        raise ValueError(f"roi_weight must be a finite number >= 0, got {roi_weight!r}.")
    return weight


def masks_to_grid(masks, grid_shape, dilation=0):
    """ROI masks ``(N, *mask_spatial)`` -> soft masks ``(N, *grid_shape)`` in [0, 1].

    Area averaging (the share of each cell covered by the ROI), then a max
    filter of ``dilation`` cells on each side.
    """
    masks = masks.to(torch.float32)
    ndim = len(grid_shape)
    pool = F.adaptive_avg_pool2d if ndim == 2 else F.adaptive_avg_pool3d
    out = pool(masks[:, None], tuple(grid_shape))
    if dilation > 0:
        k = 2 * int(dilation) + 1
        maxpool = F.max_pool2d if ndim == 2 else F.max_pool3d
        out = maxpool(out, k, stride=1, padding=int(dilation))
    return out[:, 0]


def gradcam_from_activations(activations, logits, target):
    """Differentiable Grad-CAM ``ReLU(sum_k w_k A_k)`` of class ``target`` per sample.

    ``w_k`` (the spatial mean of d logit_target / d A_k) is computed with
    autograd and detached: first order, see the module docstring.
    """
    score = logits.gather(1, target.view(-1, 1)).sum()
    grads, = torch.autograd.grad(score, activations, retain_graph=True)
    spatial = tuple(range(2, activations.dim()))
    weights = grads.mean(dim=spatial, keepdim=True).detach()
    return F.relu((weights * activations).sum(1))


def _dice_loss(cam, grid_masks):
    flat = cam.reshape(len(cam), -1)
    peak = flat.amax(1, keepdim=True).clamp_min(1e-12)
    m, g = flat / peak, grid_masks.reshape(len(cam), -1).to(cam.dtype)
    return 1 - 2 * (m * g).sum(1) / (m.sum(1) + g.sum(1)).clamp_min(1e-12)


def _outside_loss(cam, grid_masks):
    m = cam.reshape(len(cam), -1)
    g = grid_masks.reshape(len(cam), -1).to(cam.dtype)
    total = m.sum(1)
    # a blank map has no mass anywhere, so none outside
    return torch.where(total > 0, (m * (1 - g)).sum(1) / total.clamp_min(1e-12),
                       torch.zeros_like(total))


def _rrr_loss(x, logits, masks):
    log_p = F.log_softmax(logits, dim=1).sum()
    grads, = torch.autograd.grad(log_p, x, create_graph=True)
    inside = masks_to_grid(masks, tuple(x.shape[2:]))[:, None]  # to the input's resolution
    outside = (1 - (inside > 0).to(grads.dtype))
    return ((grads * outside) ** 2).reshape(len(x), -1).sum(1)


def roi_loss_term(kind, *, x, logits, activations, target, masks, has_roi, dilation=0):
    """Mean attention loss over the samples of a batch that have an ROI.

    Parameters
    ----------
    kind : one of ``ROI_LOSSES``
    x : tensor (B, C, ...)
        The input batch; for ``"rrr"`` it must require gradients.
    logits : tensor (B, n_classes)
    activations : tensor (B, K, ...) or None
        Output of the Grad-CAM layer in the same forward pass (``"dice"``,
        ``"outside"``).
    target : int tensor (B,)
        True class column of each sample.
    masks : bool tensor (B, ...)
        At any resolution with the images' aspect ratio.
    has_roi : bool tensor (B,)
    dilation : int
        Cells by which the mask is grown on the attention grid.

    Returns
    -------
    scalar tensor
        0 (with no graph) when no sample of the batch has an ROI.
    """
    if not bool(has_roi.any()):
        return logits.new_zeros(())
    if kind == "rrr":
        per_sample = _rrr_loss(x, logits, masks)
    else:
        cam = gradcam_from_activations(activations, logits, target)
        grid = masks_to_grid(masks, tuple(cam.shape[1:]), dilation)
        per_sample = (_dice_loss if kind == "dice" else _outside_loss)(cam, grid)
    return per_sample[has_roi].mean()
