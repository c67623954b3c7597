"""Query strategies with modAL's signature ``f(classifier, X_pool, n_instances=1, **kwargs)``.

Each returns an int array of distinct pool indices, best first. They work with
:class:`~xal_sklearn.ActiveLearner`, with ``modAL.models.ActiveLearner``, with a
fitted :class:`~xal_sklearn.CNNClassifier` or with a fitted Pipeline ending in one.
"""

import numpy as np
from sklearn.utils import check_random_state

from ._pool import pool_length
from ._validation import check_n_instances
from .scoring import score_pool

__all__ = ["dual_criterion_sampling", "misalignment_sampling", "random_sampling", "top_k"]


def top_k(scores, n_instances, random_state=None):
    """Indices of the ``n_instances`` highest scores, best first.

    Ties are broken at random with ``random_state``, so equal scores do not
    always favour low indices; the same seed gives the same choice.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_instances = check_n_instances(n_instances, len(scores))
    rng = check_random_state(random_state)
    perm = rng.permutation(len(scores))
    # stable sort on the shuffled scores: the shuffle decides between ties only
    order = np.argsort(-scores[perm], kind="stable")[:n_instances]
    return perm[order].astype(np.intp)


def dual_criterion_sampling(classifier, X_pool, n_instances=1, roi_masks=None, alpha=0.5,
                            uncertainty="entropy", random_state=None, **score_kwargs):
    """Query the samples the model is unsure about *and* looks at the wrong place for.

    Each pool sample is scored by
    ``alpha * normalised_uncertainty + (1 - alpha) * (1 - Dice(Grad-CAM, ROI))``
    (see :func:`~xal_sklearn.score_pool`) and the ``n_instances`` highest are
    returned.

    Parameters
    ----------
    classifier : ActiveLearner (ours or modAL's), fitted CNNClassifier or Pipeline
    X_pool : array-like (N, C, H, W), memmap or torch Dataset
    n_instances : int, default=1
    roi_masks : array-like (N, H, W) or (N, D, H, W), optional
        ROI masks of the pool; without them every sample falls under
        ``missing_roi`` (by default: pure uncertainty sampling).
    alpha : float in [0, 1], default=0.5
        1 equals entropy (or the chosen uncertainty) sampling, 0 is
        :func:`misalignment_sampling`.
    uncertainty : {"entropy", "margin", "least_confident"}, default="entropy"
    random_state : int, RandomState instance or None
        Breaks ties between equal scores.
    **score_kwargs
        Passed to :func:`~xal_sklearn.score_pool` (``alignment``,
        ``threshold``, ``missing_roi``, ``layer``, ``batch_size``, ...).

    Returns
    -------
    ndarray of int, shape (n_instances,)
        Distinct pool indices, highest score first.
    """
    check_n_instances(n_instances, pool_length(X_pool))
    scores = score_pool(classifier, X_pool, roi_masks, alpha=alpha, uncertainty=uncertainty,
                        **score_kwargs)
    return top_k(scores.combined, n_instances, random_state)


def misalignment_sampling(classifier, X_pool, n_instances=1, roi_masks=None,
                          random_state=None, **score_kwargs):
    """Query the samples whose Grad-CAM overlaps their ROI least (``alpha=0``).

    Samples without an ROI follow ``missing_roi`` (see
    :func:`~xal_sklearn.score_pool`); with the default policy they are ranked
    by uncertainty on the same [0, 1] scale.
    """
    if "alpha" in score_kwargs:
        raise TypeError("misalignment_sampling fixes alpha=0; use dual_criterion_sampling "
                        "to weigh in uncertainty.")
    return dual_criterion_sampling(classifier, X_pool, n_instances, roi_masks=roi_masks,
                                   alpha=0.0, random_state=random_state, **score_kwargs)


def random_sampling(classifier, X_pool, n_instances=1, random_state=None, **kwargs):
    """Uniformly random distinct pool indices (the baseline); other kwargs are ignored."""
    n_pool = pool_length(X_pool)
    n_instances = check_n_instances(n_instances, n_pool)
    rng = check_random_state(random_state)
    return rng.choice(n_pool, size=n_instances, replace=False).astype(np.intp)
