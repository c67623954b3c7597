"""Query strategies with modAL's signature ``f(classifier, X_pool, n_instances=1, **kwargs)``.

Each returns an int array of distinct pool indices, best first. They work with
:class:`~xal_sklearn.ActiveLearner`, with ``modAL.models.ActiveLearner``, with a
fitted :class:`~xal_sklearn.CNNClassifier` or with a fitted Pipeline ending in one.
"""

import warnings

import numpy as np
from sklearn.utils import Bunch, check_random_state

from . import _skal
from ._pool import iter_pool, pool_length
from ._validation import check_n_instances, resolve_estimator
from .scoring import score_pool
from .uncertainty import check_uncertainty_name, normalized_uncertainty

__all__ = ["dual_criterion_sampling", "diverse_top_k", "misalignment_sampling",
           "random_sampling", "top_k", "uncertainty_sampling", "DIVERSITY", "NoROIWarning",
           "SCORE_FIELDS"]

#: How :func:`diverse_top_k` spreads a batch over the embedding space.
DIVERSITY = ("kcenter", "cluster")

#: What a strategy called with ``return_scores=True`` reports per queried sample.
SCORE_FIELDS = ("uncertainty", "alignment", "misalignment", "combined")


class NoROIWarning(UserWarning):
    """No pool sample has an ROI, so explanation-guided sampling is uncertainty sampling."""


def _report(idx, scores, fields=SCORE_FIELDS):
    """The strategy's own scores of the chosen samples (NaN where it has none)."""
    return Bunch(**{f: (np.asarray(scores[f], dtype=np.float64)[idx] if f in scores
                        else np.full(len(idx), np.nan)) for f in fields})


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


def check_diversity(diversity, factor):
    if diversity is not None and diversity not in DIVERSITY:
        raise ValueError(f"Unknown diversity {diversity!r}; choose None or one of "
                         f"{', '.join(DIVERSITY)}.")
    if not (isinstance(factor, (int, np.integer)) and factor >= 1):
        raise ValueError(f"diversity_factor must be an integer >= 1, got {factor!r}.")


def diverse_top_k(scores, embeddings, n_instances, diversity="kcenter", diversity_factor=5,
                  random_state=None):
    """A batch of high scores spread over the embedding space.

    The ``diversity_factor * n_instances`` highest scores (ties broken by
    ``random_state``, as in :func:`top_k`) are the candidates; among them

    * ``"kcenter"``: greedy k-center (scikit-activeml's ``k_greedy_center``,
      euclidean) from the best candidate: each next one is the candidate
      farthest from those already chosen;
    * ``"cluster"``: k-means (scikit-learn) into ``n_instances`` clusters, and
      the best candidate of each.

    With ``diversity_factor=1`` both are :func:`top_k`. Returns the chosen
    indices ordered by score, best first.

    Cost: on top of scoring, k-center is ``O(factor * n^2 * D)`` and k-means
    ``O(factor * n^2 * D)`` per iteration for ``n = n_instances`` and ``D``
    features: milliseconds for a batch of 60 from 300 candidates of 64
    features (docs/benchmarks.md).
    """
    check_diversity(diversity, diversity_factor)
    scores = np.asarray(scores, dtype=np.float64)
    n_instances = check_n_instances(n_instances, len(scores))
    rng = check_random_state(random_state)
    candidates = top_k(scores, min(len(scores), diversity_factor * n_instances), rng)
    emb = np.asarray(embeddings, dtype=np.float64)[candidates]
    if n_instances == len(candidates):
        rows = np.arange(n_instances)
    elif diversity == "kcenter":
        rows = _skal.k_center(emb, n_instances, first=0, random_state=rng)
    else:
        from sklearn.cluster import KMeans

        labels = KMeans(n_instances, n_init=3, random_state=rng.randint(2**31 - 1)).fit_predict(emb)
        # candidates are best first, so the first row of each cluster is its best
        rows = np.unique(labels, return_index=True)[1]
        if len(rows) < n_instances:  # duplicate features can leave clusters empty
            rest = np.setdiff1d(np.arange(len(candidates)), rows)
            rows = np.concatenate([rows, rest[:n_instances - len(rows)]])
    return candidates[np.sort(rows)].astype(np.intp)


def dual_criterion_sampling(classifier, X_pool, n_instances=1, roi_masks=None, alpha=0.3,
                            uncertainty="entropy", random_state=None, return_scores=False,
                            diversity=None, diversity_factor=5, **score_kwargs):
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
    alpha : float in [0, 1], default=0.3
        1 equals entropy (or the chosen uncertainty) sampling, 0 is
        :func:`misalignment_sampling`. 0.3 is the reference method's weight; with
        attention taught by the ROI loss, 0.3-0.7 could not be told apart on
        validation groups of brain MRI, and ``alignment="soft_dice"`` (the default)
        did better than ``"roi_auc"`` at every ``alpha`` (docs/results.md).
    uncertainty : {"entropy", "margin", "least_confident"}, default="entropy"
    random_state : int, RandomState instance or None
        Breaks ties between equal scores.
    return_scores : bool, default=False
        Also return the scores this call computed for the chosen samples.
    diversity : None, "kcenter" or "cluster", default=None
        None takes the ``n_instances`` highest scores. Otherwise the batch is
        spread over the network's feature space among the
        ``diversity_factor * n_instances`` highest scores (see
        :func:`diverse_top_k`), so that near-duplicate slices of one patient
        do not fill it; the features come from the same scoring pass.
    diversity_factor : int, default=5
    **score_kwargs
        Passed to :func:`~xal_sklearn.score_pool` (``alignment``,
        ``threshold``, ``tolerance``, ``missing_roi``, ``layer``,
        ``batch_size``, ...).

    Returns
    -------
    ndarray of int, shape (n_instances,)
        Distinct pool indices, highest score first.
    scores : Bunch, only with ``return_scores=True``
        ``uncertainty``, ``alignment``, ``misalignment``, ``combined`` of the
        chosen samples, in the same order (NaN alignment without ROI).

    Warns
    -----
    NoROIWarning
        When no pool sample has an ROI: the strategy then reduces to
        uncertainty sampling.
    """
    check_n_instances(n_instances, pool_length(X_pool))
    check_diversity(diversity, diversity_factor)
    scores = score_pool(classifier, X_pool, roi_masks, alpha=alpha, uncertainty=uncertainty,
                        embeddings=diversity is not None, **score_kwargs)
    if alpha < 1 and not scores.roi_available.any():
        warnings.warn("No pool sample has an ROI, so dual-criterion sampling reduces to "
                      f"{uncertainty} (uncertainty) sampling.", NoROIWarning, stacklevel=2)
    if diversity is None:
        idx = top_k(scores.combined, n_instances, random_state)
    else:
        idx = diverse_top_k(scores.combined, scores.embeddings, n_instances, diversity,
                            diversity_factor, random_state)
    return (idx, _report(idx, scores)) if return_scores else idx


def misalignment_sampling(classifier, X_pool, n_instances=1, roi_masks=None,
                          random_state=None, return_scores=False, **score_kwargs):
    """Query the samples whose Grad-CAM overlaps their ROI least (``alpha=0``).

    Samples without an ROI follow ``missing_roi`` (see
    :func:`~xal_sklearn.score_pool`); with the default policy they are ranked
    by uncertainty on the same [0, 1] scale.
    """
    if "alpha" in score_kwargs:
        raise TypeError("misalignment_sampling fixes alpha=0; use dual_criterion_sampling "
                        "to weigh in uncertainty.")
    return dual_criterion_sampling(classifier, X_pool, n_instances, roi_masks=roi_masks,
                                   alpha=0.0, random_state=random_state,
                                   return_scores=return_scores, **score_kwargs)


def uncertainty_sampling(classifier, X_pool, n_instances=1, uncertainty="entropy",
                         random_state=None, return_scores=False, batch_size=None, **kwargs):
    """Query the most uncertain samples, from class probabilities alone (no Grad-CAM).

    Ranks like modAL's ``entropy_sampling`` / ``margin_sampling`` /
    ``uncertainty_sampling`` for ``uncertainty`` = "entropy" / "margin" /
    "least_confident", with ties broken at random by ``random_state``, and can
    report its normalised scores (``return_scores=True``, see
    :func:`dual_criterion_sampling`). Other keyword arguments (``roi_masks``
    ...) are ignored.
    """
    check_uncertainty_name(uncertainty)
    check_n_instances(n_instances, pool_length(X_pool))
    net, preprocess = resolve_estimator(classifier)
    batch_size = int(batch_size or net.batch_size)
    # streamed like score_pool: memmaps and Datasets (items image or (image, mask)) work
    proba = [net.predict_proba(x.numpy())
             for x, _, _, _ in iter_pool(X_pool, None, batch_size, preprocess)]
    u = normalized_uncertainty(np.concatenate(proba), uncertainty)
    idx = top_k(u, n_instances, random_state)
    return (idx, _report(idx, {"uncertainty": u, "combined": u})) if return_scores else idx


def random_sampling(classifier, X_pool, n_instances=1, random_state=None, return_scores=False,
                    **kwargs):
    """Uniformly random distinct pool indices (the baseline); other kwargs are ignored.

    With ``return_scores=True`` the reported scores are all NaN: nothing was scored.
    """
    n_pool = pool_length(X_pool)
    n_instances = check_n_instances(n_instances, n_pool)
    rng = check_random_state(random_state)
    idx = rng.choice(n_pool, size=n_instances, replace=False).astype(np.intp)
    return (idx, _report(idx, {})) if return_scores else idx
