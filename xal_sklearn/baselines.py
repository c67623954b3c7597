"""The field's active-learning baselines, run by scikit-activeml on our network's outputs.

BALD, BADGE, core-set, TypiClust and ProbCover are not rewritten here:
:func:`from_skactiveml` turns any scikit-activeml pool strategy into a
strategy with modAL's signature ``f(classifier, X_pool, n_instances=1, ...)``.
It runs one forward pass over the labelled images and the pool
(:func:`~xal_sklearn.embedding.pool_embeddings`), hands scikit-activeml the
penultimate features as ``X`` (labelled rows first, with their labels; pool
rows as missing labels, the only candidates), and, where the strategy wants a
classifier, a thin scikit-activeml classifier over the fitted network's own
last layer (it never trains a second model). Pool labels are never read.

Ready-made: :func:`bald_sampling`, :func:`badge_sampling`,
:func:`coreset_sampling`, :func:`typiclust_sampling`, :func:`probcover_sampling`.
Entropy, margin and least-confidence sampling stay
:func:`~xal_sklearn.uncertainty_sampling`: they select what scikit-activeml's
``UncertaintySampling`` selects on the same probabilities (tested).
"""

import inspect
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.utils import Bunch, check_random_state

from . import _skal
from ._pool import pool_length
from ._validation import check_n_instances, resolve_estimator
from .embedding import pool_embeddings
from .strategies import SCORE_FIELDS
from .uncertainty import normalized_uncertainty

__all__ = ["bald_sampling", "badge_sampling", "coreset_sampling", "from_skactiveml",
           "probcover_sampling", "typiclust_sampling", "NoLabelledDataWarning"]


class NoLabelledDataWarning(UserWarning):
    """A bare network was given without ``X_labeled``: nothing counts as labelled."""


def _labelled(classifier, X_labeled, y_labeled):
    """The labelled images and labels known to ``classifier`` (or given), else (None, None)."""
    if X_labeled is not None:
        if y_labeled is None or len(y_labeled) != pool_length(X_labeled):
            raise ValueError("X_labeled needs y_labeled of the same length.")
        return X_labeled, np.asarray(y_labeled)
    for x_name, y_name in (("X_training_", "y_training_"), ("X_training", "y_training")):
        X, y = getattr(classifier, x_name, None), getattr(classifier, y_name, None)
        if X is not None and y is not None and hasattr(classifier, "query_strategy"):
            return X, np.asarray(y)
    return None, None


def _set_if_unset(strategy, **params):
    """Fill scikit-activeml parameters the user left at None (and that the strategy has)."""
    have = strategy.get_params(deep=False)
    strategy.set_params(**{k: v for k, v in params.items() if k in have and have[k] is None})


def _query(qs, classifier, X_pool, n_instances, random_state, return_scores, X_labeled,
           y_labeled, batch_size, progress, mc_samples, normalize, query_kwargs, prepare=None):
    n_pool = pool_length(X_pool)
    n_instances = check_n_instances(n_instances, n_pool)
    net, _ = resolve_estimator(classifier)
    X_lab, y_lab = _labelled(classifier, X_labeled, y_labeled)
    if X_lab is None:
        warnings.warn(
            f"{type(qs).__name__}: no labelled images are known (a bare network without "
            "X_labeled=, y_labeled=), so every image counts as unlabelled; pass the "
            "labelled set, or query through an ActiveLearner.", NoLabelledDataWarning,
            stacklevel=3)
    pool = pool_embeddings(classifier, X_pool, batch_size=batch_size, progress=progress)
    parts, y = [pool.embeddings], np.full(n_pool, np.nan)
    n_lab = 0
    if X_lab is not None and pool_length(X_lab):
        lab = pool_embeddings(classifier, X_lab, batch_size=batch_size, progress=False)
        n_lab = len(lab.embeddings)
        parts.insert(0, lab.embeddings)
        y = np.concatenate([net._encode_labels(y_lab).astype(np.float64), y])
    X = np.concatenate(parts).astype(np.float64)
    if normalize:
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    rng = check_random_state(random_state)
    qs = clone(qs)
    qs.set_params(random_state=int(rng.randint(2**31 - 1)))
    if prepare is not None:  # parameters that depend on the features (ProbCover's radii)
        qs.set_params(**prepare(X))
    _set_if_unset(qs, sample_predictions_method_name="sample_proba",
                  sample_predictions_dict={"n_samples": int(mc_samples)},
                  n_classes=len(net.classes_))
    call = dict(query_kwargs)
    params = inspect.signature(qs.query).parameters
    head = _skal.head_classifier(net)
    if "clf" in params:
        call.setdefault("clf", head(random_state=int(rng.randint(2**31 - 1))))
        call.setdefault("fit_clf", False)
    if "ensemble" in params:
        call.setdefault("ensemble", head(random_state=int(rng.randint(2**31 - 1))))
        call.setdefault("fit_ensemble", False)
    if "candidates" in params:
        call["candidates"] = np.arange(n_lab, n_lab + n_pool)
    wants_utilities = "return_utilities" in params
    if wants_utilities:
        call["return_utilities"] = True
    out = qs.query(X, y, batch_size=n_instances, **call)
    chosen, utilities = (out if wants_utilities else (out, None))
    idx = np.asarray(chosen, dtype=np.intp) - n_lab
    if len(idx) != n_instances or len(np.unique(idx)) != len(idx) or (idx < 0).any():
        raise RuntimeError(f"{type(qs).__name__} returned {chosen!r}, not {n_instances} "
                           "distinct pool rows.")
    if not return_scores:
        return idx
    own = (np.full(len(idx), np.nan) if utilities is None else
           np.asarray(utilities, dtype=np.float64)[np.arange(len(idx)), idx + n_lab])
    u = normalized_uncertainty(pool.proba[idx])
    scores = {"uncertainty": u, "combined": own}
    return idx, Bunch(**{f: scores.get(f, np.full(len(idx), np.nan)) for f in SCORE_FIELDS})


def from_skactiveml(query_strategy, *, mc_samples=20, normalize=False, **query_kwargs):
    """A scikit-activeml pool strategy as a strategy with modAL's signature.

    Parameters
    ----------
    query_strategy : scikit-activeml ``SingleAnnotatorPoolQueryStrategy`` instance
        For example ``skactiveml.pool.Badge()``, ``CoreSet()``, ``TypiClust()``,
        ``ProbCover()``, ``GreedyBALD()``, ``BatchBALD()``. It is cloned per
        query and seeded from the strategy's ``random_state``, so the same seed
        gives the same queries. Parameters left at None that this adapter can
        fill are filled: ``sample_predictions_method_name="sample_proba"``
        (MC dropout, for the BALD family), ``n_classes`` (ProbCover).
    mc_samples : int, default=20
        MC dropout samples for strategies that sample predictions (BALD).
        They are drawn on the captured features: one pass over the pool, then
        ``mc_samples`` evaluations of the last layer (exact for networks whose
        only dropout feeds it, such as SmallCNN with ``module__dropout > 0``;
        any other network is refused, see :func:`~xal_sklearn.embedding.head_dropout`).
    normalize : bool, default=False
        Scale every feature vector to unit length first, for strategies whose
        parameters assume it (ProbCover's default radii 0.2-2.0 do; its paper
        uses L2-normalised self-supervised features). A classifier-based
        strategy then sees the head applied to scaled features: leave it False
        for BALD and BADGE.
    **query_kwargs
        Passed to ``query_strategy.query`` on every call.

    Returns
    -------
    strategy : callable
        With modAL's signature and these keywords: ``random_state``,
        ``return_scores``, ``X_labeled``, ``y_labeled``, ``batch_size``,
        ``progress``; other keywords (``roi_masks``, ...) are ignored. It
        returns distinct pool indices in the strategy's order, and with
        ``return_scores=True`` also the strategy's own utility of each pick at
        the step it was chosen (as ``combined``) and its normalised entropy. The
        labelled set comes from the active learner (ours or modAL's), or from
        ``X_labeled`` and ``y_labeled`` with a bare fitted network.

    Examples
    --------
    >>> from skactiveml.pool import Badge                      # doctest: +SKIP
    >>> learner = ActiveLearner(net, query_strategy=from_skactiveml(Badge()),
    ...                         X_training=X0, y_training=y0)  # doctest: +SKIP
    """
    if not hasattr(query_strategy, "query") or not hasattr(query_strategy, "get_params"):
        raise TypeError("from_skactiveml expects a scikit-activeml query strategy instance "
                        f"(such as skactiveml.pool.Badge()); got {query_strategy!r}.")
    if int(mc_samples) < 1:
        raise ValueError(f"mc_samples must be >= 1, got {mc_samples}.")

    def strategy(classifier, X_pool, n_instances=1, random_state=None, return_scores=False,
                 X_labeled=None, y_labeled=None, batch_size=None, progress=None, **ignored):
        return _query(query_strategy, classifier, X_pool, n_instances, random_state,
                      return_scores, X_labeled, y_labeled, batch_size, progress, mc_samples,
                      normalize, query_kwargs)

    strategy.__name__ = strategy.__qualname__ = f"from_skactiveml({type(query_strategy).__name__})"
    strategy.query_strategy = query_strategy
    return strategy


def _ready(class_name, classifier, X_pool, n_instances, random_state, return_scores, kwargs,
           mc_samples=20, normalize=False, prepare=None):
    qs = getattr(_skal.require(), class_name)()
    labelled = {k: kwargs.pop(k, None) for k in ("X_labeled", "y_labeled", "batch_size",
                                                  "progress")}
    return _query(qs, classifier, X_pool, n_instances, random_state, return_scores,
                  *labelled.values(), mc_samples, normalize, {}, prepare=prepare)


#: ProbCover's candidate radii, as percentiles of the pairwise feature distances: the
#: scale of a network's features changes with its training (measured: the 1st percentile
#: of unit-length SmallCNN features was 0.006 after 3 epochs, 0.09 after 15), so fixed
#: radii (scikit-activeml's default 0.2-2.0) covered everything with one ball.
PROBCOVER_PERCENTILES = (0.1, 0.25, 0.5, 1, 2, 5, 10, 25)


def _probcover_radii(X, max_rows=2000, seed=0):
    from sklearn.metrics import pairwise_distances

    rows = X if len(X) <= max_rows else X[np.random.RandomState(seed).choice(
        len(X), max_rows, replace=False)]
    d = pairwise_distances(rows)[np.triu_indices(len(rows), 1)]
    return {"deltas": np.unique(np.percentile(d, PROBCOVER_PERCENTILES))}


_COMMON = """
    Parameters
    ----------
    classifier : ActiveLearner (ours or modAL's), fitted CNNClassifier or Pipeline
    X_pool : array-like (N, C, H, W), memmap or torch Dataset
    n_instances : int, default=1
    random_state : int, RandomState instance or None
    return_scores : bool, default=False
        Also return the strategy's own utilities of the chosen samples.
    **kwargs
        ``X_labeled``, ``y_labeled``, ``batch_size``, ``progress`` (see
        :func:`from_skactiveml`); others are ignored.

    Returns
    -------
    ndarray of int (n_instances,), and a Bunch of scores with ``return_scores=True``.
"""


def bald_sampling(classifier, X_pool, n_instances=1, random_state=None, return_scores=False,
                  mc_samples=20, **kwargs):
    """BALD with MC dropout (Houlsby et al. 2011; Gal et al. 2017), top-k.

    scikit-activeml's ``GreedyBALD`` on ``mc_samples`` MC dropout samples
    (default 20), drawn on the features from one pass over the pool (see
    :func:`from_skactiveml`). The network needs dropout in front of its last
    layer, e.g. ``CNNClassifier(module__dropout=0.25)``.
    """
    return _ready("GreedyBALD", classifier, X_pool, n_instances, random_state, return_scores,
                  kwargs, mc_samples=mc_samples)


def badge_sampling(classifier, X_pool, n_instances=1, random_state=None, return_scores=False,
                   **kwargs):
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings.

    scikit-activeml's ``Badge``, given the network's features and its head, so
    the gradient embeddings ``(p - onehot(argmax p)) outer h`` come from one
    forward pass.
    """
    return _ready("Badge", classifier, X_pool, n_instances, random_state, return_scores, kwargs)


def coreset_sampling(classifier, X_pool, n_instances=1, random_state=None, return_scores=False,
                     **kwargs):
    """Core-set (Sener & Savarese 2018): greedy k-center on the penultimate features.

    scikit-activeml's ``CoreSet``; the labelled images are the initial centres.
    """
    return _ready("CoreSet", classifier, X_pool, n_instances, random_state, return_scores,
                  kwargs)


def typiclust_sampling(classifier, X_pool, n_instances=1, random_state=None,
                       return_scores=False, **kwargs):
    """TypiClust (Hacohen et al. 2022): the most typical image of the largest uncovered clusters.

    scikit-activeml's ``TypiClust`` (k-means into labelled + batch clusters,
    typicality over 5 neighbours) on the penultimate features.
    """
    return _ready("TypiClust", classifier, X_pool, n_instances, random_state, return_scores,
                  kwargs)


def probcover_sampling(classifier, X_pool, n_instances=1, random_state=None,
                       return_scores=False, **kwargs):
    """ProbCover (Yehuda et al. 2022): maximum coverage by delta-balls in feature space.

    scikit-activeml's ``ProbCover`` on the penultimate features scaled to unit
    length (as in the paper). Its ball radius is the largest candidate whose
    balls keep 95 % purity over k-means with one cluster per class; the
    candidates are percentiles of the pairwise distances
    (:data:`PROBCOVER_PERCENTILES`), since the features' scale changes with
    training. Memory grows with the square of the labelled + pool size
    (scikit-activeml keeps all pairwise distances: 48 MB for 2,450 images).
    """
    return _ready("ProbCover", classifier, X_pool, n_instances, random_state, return_scores,
                  kwargs, normalize=True, prepare=_probcover_radii)


for _f in (bald_sampling, badge_sampling, coreset_sampling, typiclust_sampling,
           probcover_sampling):
    _f.__doc__ += _COMMON
