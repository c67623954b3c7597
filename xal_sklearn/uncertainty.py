"""Uncertainty measures normalised to [0, 1].

Normalisation makes the ``alpha`` of :func:`~xal_sklearn.dual_criterion_sampling`
mean what it says: uncertainty and misalignment live on the same [0, 1] scale,
and 1 is the most uncertain any prediction over ``C`` classes can be.

* ``"entropy"``: ``H(p) / log(C)``;
* ``"margin"``: ``1 - (p_top1 - p_top2)``;
* ``"least_confident"``: ``(1 - p_top1) * C / (C - 1)``.

Rankings are the same as modAL's ``entropy_sampling``, ``margin_sampling``
and ``uncertainty_sampling``; only the scale differs.
"""

import numpy as np
import torch

from ._names import UNCERTAINTY_MEASURES

__all__ = ["normalized_uncertainty", "UNCERTAINTY_MEASURES"]


def _uncertainty_t(proba, method):
    n_classes = proba.shape[1]
    if n_classes < 2:
        return torch.zeros(len(proba), dtype=proba.dtype, device=proba.device)
    if method == "entropy":
        plogp = torch.where(proba > 0, proba * torch.log(proba), torch.zeros_like(proba))
        return (-plogp.sum(1) / np.log(n_classes)).clamp(0, 1)
    top2 = torch.topk(proba, 2, dim=1).values
    if method == "margin":
        return 1 - (top2[:, 0] - top2[:, 1])
    if method == "least_confident":
        return ((1 - top2[:, 0]) * n_classes / (n_classes - 1)).clamp(0, 1)
    raise ValueError(check_uncertainty_name(method))


def check_uncertainty_name(method):
    if method not in UNCERTAINTY_MEASURES:
        raise ValueError(
            f"Unknown uncertainty {method!r}; choose one of {', '.join(UNCERTAINTY_MEASURES)}."
        )
    return method


def normalized_uncertainty(proba, method="entropy"):
    """Per-sample uncertainty of class probabilities, scaled to [0, 1].

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        Rows sum to 1.
    method : {"entropy", "margin", "least_confident"}, default="entropy"

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    check_uncertainty_name(method)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2:
        raise ValueError(f"proba must be 2-D (n_samples, n_classes), got shape {proba.shape}.")
    return _uncertainty_t(torch.from_numpy(proba), method).numpy()
