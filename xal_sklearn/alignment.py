"""Agreement between attention maps and regions of interest.

All functions take a batch of maps ``(N, H, W) or (N, D, H, W)`` with values in [0, 1]
(as :func:`~xal_sklearn.gradcam` returns) and a batch of masks of the same
shape (bool, 0/1 or 0/255; values >= 0.5 count as ROI) and return one score per
sample.

**Empty masks.** A sample whose mask is empty has no region to agree with, so
its score is undefined and returned as ``NaN`` -- never 0 or 1, which would
read as "looks at the wrong place" or "perfectly aligned". Use ``np.nanmean``
to average, and see ``missing_roi`` in :func:`~xal_sklearn.score_pool` for how
such samples are ranked.
"""

import numpy as np
import torch

from ._validation import binarize_masks

__all__ = ["soft_dice", "dice", "iou", "pointing_game"]


# --- torch kernels, used on device by the pool scorer -------------------------

def _flat(maps, masks):
    return maps.reshape(len(maps), -1), masks.reshape(len(masks), -1).to(maps.dtype)


def _soft_dice_t(maps, masks):
    m, g = _flat(maps, masks)
    inter = (m * g).sum(1)
    denom = m.sum(1) + g.sum(1)
    out = 2 * inter / denom.clamp_min(torch.finfo(m.dtype).tiny)
    return out.masked_fill(g.sum(1) == 0, float("nan"))


def _dice_t(maps, masks, threshold):
    return _soft_dice_t((maps >= threshold).to(maps.dtype), masks)


def _iou_t(maps, masks, threshold):
    m, g = _flat((maps >= threshold).to(maps.dtype), masks)
    inter = (m * g).sum(1)
    union = m.sum(1) + g.sum(1) - inter
    out = inter / union.clamp_min(1)
    return out.masked_fill(g.sum(1) == 0, float("nan"))


def _pointing_game_t(maps, masks):
    m, g = _flat(maps, masks)
    peak = m.argmax(1, keepdim=True)
    hit = g.gather(1, peak)[:, 0]
    hit = hit.masked_fill(m.amax(1) <= 0, 0.0)  # a blank map points nowhere
    return hit.masked_fill(g.sum(1) == 0, float("nan"))


ALIGNMENT_KERNELS = {
    "soft_dice": lambda maps, masks, threshold: _soft_dice_t(maps, masks),
    "dice": _dice_t,
    "iou": _iou_t,
    "pointing_game": lambda maps, masks, threshold: _pointing_game_t(maps, masks),
}


# --- public numpy API ----------------------------------------------------------

def _as_tensors(maps, masks):
    maps = np.asarray(maps, dtype=np.float64)
    masks = binarize_masks(masks)
    if maps.shape != masks.shape:
        if masks.ndim == maps.ndim + 1 and masks.shape[1] == 1:
            masks = masks[:, 0]
        else:
            raise ValueError(f"maps have shape {maps.shape} but masks have shape {masks.shape}.")
    if maps.ndim < 2:
        raise ValueError(f"Expected a batch of maps (N, *spatial), got shape {maps.shape}.")
    return torch.from_numpy(maps), torch.from_numpy(np.ascontiguousarray(masks))


def soft_dice(maps, masks):
    """Soft Dice ``2 * sum(map * mask) / (sum(map) + sum(mask))`` per sample.

    Parameters
    ----------
    maps : array-like of shape (n_samples, H, W) or (n_samples, D, H, W)
        Attention maps with values in [0, 1].
    masks : array-like of shape (n_samples, H, W) or (n_samples, D, H, W)
        ROI masks: bool, 0/1 or 0/255.

    Returns
    -------
    ndarray of shape (n_samples,)
        In [0, 1]; NaN where the mask is empty. An all-zero map against a
        non-empty mask gives 0.
    """
    return _soft_dice_t(*_as_tensors(maps, masks)).numpy()


def dice(maps, masks, threshold=0.5):
    """Dice coefficient of ``maps >= threshold`` and the masks, per sample.

    Returns NaN where the mask is empty; see :func:`soft_dice`.
    """
    return _dice_t(*_as_tensors(maps, masks), threshold).numpy()


def iou(maps, masks, threshold=0.5):
    """Intersection over union of ``maps >= threshold`` and the masks, per sample.

    Returns NaN where the mask is empty; see :func:`soft_dice`.
    """
    return _iou_t(*_as_tensors(maps, masks), threshold).numpy()


def pointing_game(maps, masks):
    """1.0 where the map's maximum lies inside the mask, else 0.0.

    Ties go to the first maximum in C order. A map with no positive value
    points nowhere and scores 0. NaN where the mask is empty.
    """
    return _pointing_game_t(*_as_tensors(maps, masks)).numpy()
