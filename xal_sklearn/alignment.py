"""Agreement between attention maps and regions of interest.

All functions take a batch of maps ``(N, H, W) or (N, D, H, W)`` with values in [0, 1]
(as :func:`~xal_sklearn.gradcam` returns) and a batch of masks of the same
shape (bool, 0/1 or 0/255; values >= 0.5 count as ROI) and return one score per
sample, higher meaning better aligned.

``ALIGNMENT_METRICS`` is the one registry of metrics: :func:`~xal_sklearn.score_pool`
(``alignment=``), the experiments and the ``xal`` command read their choices from it.

**Chance levels.** What a map that knows nothing about the ROI scores, for a mask
covering a fraction ``a`` of the image:

============== ====================================================================
metric         chance level
============== ====================================================================
soft_dice      about ``2 c a / (c + a)`` for a map of mean ``c``: tends to ``2a``
               for a diffuse map, so it is tiny for small lesions
dice, iou      depend on the map and ``threshold``; also shrink with ``a``
pointing_game  ``a`` (the mask dilated by ``tolerance`` pixels) for a random peak
roi_auc        0.5, whatever the lesion size
mass_in_roi    ``a`` in expectation
============== ====================================================================

:func:`chance_alignment` measures them for given masks with random maps.

**Empty masks.** A sample whose mask is empty has no region to agree with, so
its score is undefined and returned as ``NaN`` -- never 0 or 1, which would
read as "looks at the wrong place" or "perfectly aligned". Use ``np.nanmean``
to average, and see ``missing_roi`` in :func:`~xal_sklearn.score_pool` for how
such samples are ranked.
"""

from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import check_random_state

from ._names import ALIGNMENT_NAMES
from ._validation import binarize_masks, check_finite_nonnegative

__all__ = ["ALIGNMENT_METRICS", "chance_alignment", "check_alignment_name", "dice", "iou",
           "mass_in_roi", "pointing_game", "roi_auc", "soft_dice"]


# --- torch kernels, run on the scoring device -----------------------------------------
# Each takes maps (N, *spatial) float and masks (N, *spatial) bool or float, plus
# keyword options, and returns (N,) with NaN where the mask is empty.

def _flat(maps, masks):
    return maps.reshape(len(maps), -1), masks.reshape(len(masks), -1).to(maps.dtype)


def _undefined_if_empty(out, g):
    return out.masked_fill(g.sum(1) == 0, float("nan"))


def soft_dice_t(maps, masks, **_):
    """Soft Dice ``2 sum(map * mask) / (sum(map) + sum(mask))``; masks may be soft."""
    m, g = _flat(maps, masks)
    out = 2 * (m * g).sum(1) / (m.sum(1) + g.sum(1)).clamp_min(torch.finfo(m.dtype).tiny)
    return _undefined_if_empty(out, g)


def _dice_t(maps, masks, threshold=0.5, **_):
    return soft_dice_t((maps >= threshold).to(maps.dtype), masks)


def _iou_t(maps, masks, threshold=0.5, **_):
    m, g = _flat((maps >= threshold).to(maps.dtype), masks)
    inter = (m * g).sum(1)
    return _undefined_if_empty(inter / (m.sum(1) + g.sum(1) - inter).clamp_min(1), g)


def _ball(radius, ndim, device):
    r = int(np.ceil(radius))
    axes = torch.meshgrid(*[torch.arange(-r, r + 1, device=device, dtype=torch.float32)] * ndim,
                          indexing="ij")
    return (sum(a ** 2 for a in axes) <= radius ** 2).to(torch.float32)


def dilate_masks(masks, radius):
    """Masks ``(N, *spatial)`` grown by ``radius`` pixels (Euclidean ball), as float 0/1."""
    masks = masks.to(torch.float32)
    if radius <= 0:
        return masks
    ndim = masks.dim() - 1
    kernel = _ball(radius, ndim, masks.device)[None, None]
    conv = F.conv2d if ndim == 2 else F.conv3d
    return (conv(masks[:, None], kernel, padding=kernel.shape[-1] // 2)[:, 0] > 0.5).float()


def _pointing_game_t(maps, masks, tolerance=0, **_):
    m, g = _flat(maps, masks)
    hit_mask = dilate_masks(masks, tolerance).reshape(len(masks), -1).to(m.dtype)
    hit = hit_mask.gather(1, m.argmax(1, keepdim=True))[:, 0]
    hit = hit.masked_fill(m.amax(1) <= 0, 0.0)  # a blank map points nowhere
    return _undefined_if_empty(hit, g)


def _roi_auc_t(maps, masks, **_):
    # Mann-Whitney U from average ranks (ties share their mean rank), all samples at once
    m, g = _flat(maps, masks)
    m = m.contiguous()
    pos = g > 0.5
    n_pos = pos.sum(1).to(m.dtype)
    n_neg = m.shape[1] - n_pos
    sorted_m = torch.sort(m, dim=1).values
    below = torch.searchsorted(sorted_m, m, right=False)
    upto = torch.searchsorted(sorted_m, m, right=True)
    rank = (below + upto + 1).to(m.dtype) / 2
    u = (rank * pos).sum(1) - n_pos * (n_pos + 1) / 2
    auc = u / (n_pos * n_neg).clamp_min(1)
    return auc.masked_fill((n_pos == 0) | (n_neg == 0), float("nan"))


def _mass_in_roi_t(maps, masks, **_):
    m, g = _flat(maps, masks)
    total = m.sum(1)
    out = torch.where(total > 0, (m * g).sum(1) / total.clamp_min(torch.finfo(m.dtype).tiny),
                      torch.zeros_like(total))  # a blank map puts no mass anywhere
    return _undefined_if_empty(out, g)


AlignmentMetric = namedtuple("AlignmentMetric", ["kernel", "chance", "description"])

#: name -> (torch kernel, chance level in words, description). The one list of metrics
#: (its names, in this order, are ``_names.ALIGNMENT_NAMES``, which the CLI reads).
ALIGNMENT_METRICS = {
    "soft_dice": AlignmentMetric(
        soft_dice_t, "about 2ca/(c+a) (map mean c, mask fraction a)",
        "soft Dice of the map and the mask"),
    "dice": AlignmentMetric(
        _dice_t, "depends on the map and threshold", "Dice of map >= threshold and the mask"),
    "iou": AlignmentMetric(
        _iou_t, "depends on the map and threshold", "IoU of map >= threshold and the mask"),
    "pointing_game": AlignmentMetric(
        _pointing_game_t, "the mask's area fraction (dilated by tolerance)",
        "1 if the map's peak lies within tolerance pixels of the mask"),
    "roi_auc": AlignmentMetric(
        _roi_auc_t, "0.5", "pixel ROC AUC of the map against the mask"),
    "mass_in_roi": AlignmentMetric(
        _mass_in_roi_t, "the mask's area fraction", "share of the map's mass inside the mask"),
}
if tuple(ALIGNMENT_METRICS) != ALIGNMENT_NAMES:  # the CLI offers _names' copy
    raise ImportError("ALIGNMENT_METRICS and _names.ALIGNMENT_NAMES list different metrics.")


def check_alignment_name(name):
    """Return ``name`` if it is a registered metric, else raise naming the choices."""
    if name not in ALIGNMENT_METRICS:
        raise ValueError(
            f"Unknown alignment {name!r}; choose one of {', '.join(ALIGNMENT_METRICS)}.")
    return name


def alignment_t(name, maps, masks, threshold=0.5, tolerance=0):
    """Run metric ``name`` on torch batches (on their device)."""
    return ALIGNMENT_METRICS[check_alignment_name(name)].kernel(
        maps, masks, threshold=threshold, tolerance=tolerance)


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
        non-empty mask gives 0. Chance level: about ``2ca / (c + a)`` for a
        map of mean ``c`` and a mask covering a fraction ``a`` of the image.
    """
    return soft_dice_t(*_as_tensors(maps, masks)).numpy()


def dice(maps, masks, threshold=0.5):
    """Dice coefficient of ``maps >= threshold`` and the masks, per sample.

    Returns NaN where the mask is empty; see :func:`soft_dice`.
    """
    return _dice_t(*_as_tensors(maps, masks), threshold=threshold).numpy()


def iou(maps, masks, threshold=0.5):
    """Intersection over union of ``maps >= threshold`` and the masks, per sample.

    Returns NaN where the mask is empty; see :func:`soft_dice`.
    """
    return _iou_t(*_as_tensors(maps, masks), threshold=threshold).numpy()


def pointing_game(maps, masks, tolerance=0):
    """1.0 where the map's maximum lies within ``tolerance`` pixels of the mask, else 0.0.

    Parameters
    ----------
    maps, masks : see :func:`soft_dice`
    tolerance : float, default=0
        Radius in pixels (Euclidean) by which the mask is grown before the
        test; coarse attention maps (Grad-CAM of a 16 x 16 grid at 64 px) need
        a few pixels to hit small lesions.

    Returns
    -------
    ndarray of shape (n_samples,)
        Ties go to the first maximum in C order. A map with no positive value
        points nowhere and scores 0. NaN where the mask is empty. Chance level:
        the area fraction of the (grown) mask.
    """
    tolerance = check_finite_nonnegative(tolerance, "tolerance")
    return _pointing_game_t(*_as_tensors(maps, masks), tolerance=tolerance).numpy()


def roi_auc(maps, masks):
    """Pixel ROC AUC of each map as a score for "inside the ROI".

    The probability that a random ROI pixel has a higher map value than a
    random background pixel (ties count one half), as
    ``sklearn.metrics.roc_auc_score(mask.ravel(), map.ravel())`` per sample.

    Returns
    -------
    ndarray of shape (n_samples,)
        In [0, 1]; chance level 0.5 whatever the lesion size (a blank map
        scores exactly 0.5). NaN where the mask is empty or covers the whole
        image (no background to rank against).
    """
    return _roi_auc_t(*_as_tensors(maps, masks)).numpy()


def mass_in_roi(maps, masks):
    """Share of each map's total mass that lies inside its mask.

    Also known as relevance mass accuracy or the energy-based pointing game.

    Returns
    -------
    ndarray of shape (n_samples,)
        In [0, 1]; chance level: the mask's area fraction (in expectation, for
        a map independent of the mask). A blank map scores 0. NaN where the
        mask is empty.
    """
    return _mass_in_roi_t(*_as_tensors(maps, masks)).numpy()


def chance_alignment(masks, metric="roi_auc", grid_shape=None, threshold=0.5, tolerance=0,
                     random_state=0):
    """Mean score of random attention maps against ``masks``: the metric's chance level.

    Each random map is uniform noise on ``grid_shape`` (the attention grid of
    the explained layer; default the masks' own resolution), upsampled like
    Grad-CAM (bilinear / trilinear) to the masks' size and scaled to [0, 1]
    by its maximum.

    Parameters
    ----------
    masks : array-like (n_samples, H, W) or (n_samples, D, H, W)
    metric : str, a key of ``ALIGNMENT_METRICS``
    grid_shape : tuple of int, optional
    threshold, tolerance : as for the metric
    random_state : int, RandomState instance or None, default=0

    Returns
    -------
    float
        The mean over samples with a non-empty mask (NaN if there are none).
    """
    check_alignment_name(metric)
    masks_t = torch.from_numpy(np.ascontiguousarray(binarize_masks(masks)))
    spatial = tuple(masks_t.shape[1:])
    grid = tuple(grid_shape) if grid_shape is not None else spatial
    if len(grid) != len(spatial):
        raise ValueError(f"grid_shape {grid} does not match masks of shape {spatial}.")
    rng = check_random_state(random_state)
    noise = torch.from_numpy(rng.random_sample((len(masks_t), 1) + grid))
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    maps = F.interpolate(noise, size=spatial, mode=mode, align_corners=False)[:, 0]
    maps = maps / maps.reshape(len(maps), -1).amax(1).view(-1, *([1] * len(spatial)))
    scores = alignment_t(metric, maps, masks_t, threshold=threshold, tolerance=tolerance)
    scores = scores.numpy()
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
