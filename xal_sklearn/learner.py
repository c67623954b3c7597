"""A modAL-compatible active learner that keeps ROI masks and follows sklearn's contract."""

import copy
import json

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from torch.utils.data import Dataset

from ._persist import (atomic_folder, check_format, load_net, read_json, resolve_folder,
                       rng_from_json, rng_to_json, save_net)
from ._pool import pool_length
from ._validation import accepts_keyword, check_images, check_n_instances, check_roi_masks
from .strategies import dual_criterion_sampling

__all__ = ["ActiveLearner"]


def _take(X, idx):
    if isinstance(X, (list, tuple, Dataset)):
        return [X[int(i)] for i in idx]
    return X[idx]


class _Summary:
    """Stands in for an array in the learner's repr: its type, shape and dtype, no values."""

    def __init__(self, value):
        shape = getattr(value, "shape", None)
        dtype = getattr(value, "dtype", None)
        kind = type(value).__name__
        if shape is None and isinstance(value, (list, tuple)):
            shape = (len(value),)
        self.text = (f"<{kind} of shape {tuple(shape)}" + (f", {dtype}" if dtype is not None
                                                          else "") + ">"
                     if shape is not None else f"<{kind}>")

    def __repr__(self):
        return self.text


class ActiveLearner(ClassifierMixin, BaseEstimator):
    """Pool-based active learner for images with regions of interest.

    A drop-in for ``modAL.models.ActiveLearner`` in the active-learning loop:
    the same methods (``query``, ``teach``, ``fit``, ``predict``,
    ``predict_proba``, ``score``) taking every keyword modAL's take
    (``teach(X, y, only_new=, bootstrap=, **fit_kwargs)``, ``query(X_pool,
    n_instances=, **query_kwargs)`` ...), the same return values, and
    modAL's strategies work unchanged. It also keeps the ROI masks of the
    labelled images (``roi_masks=``, the third positional parameter of
    ``fit`` and ``teach``, where modAL has ``bootstrap``), works on current
    scikit-learn (modAL 0.4.1's ``teach`` does not: it calls ``check_X_y``
    with ``force_all_finite``, which scikit-learn 1.8 removed), and supports
    ``get_params``/``set_params``/``clone``. modAL's constructor options
    ``bootstrap_init``, ``on_transformed`` and ``**fit_kwargs`` are not taken
    (scikit-learn's contract forbids ``**kwargs`` in ``__init__``).

    Following scikit-learn, the constructor only stores its arguments: the
    estimator is cloned and fitted on ``X_training, y_training`` at the first
    call that needs it (``query``, ``predict``, ``teach`` ...), or by ``fit``.

    Parameters
    ----------
    estimator : classifier
        Normally a :class:`~xal_sklearn.CNNClassifier` (or a Pipeline ending in
        one). It is cloned; the fitted copy is ``estimator_``.
    query_strategy : callable, default=dual_criterion_sampling
        ``f(learner, X_pool, n_instances=1, **kwargs) -> indices``; modAL's
        strategies (``entropy_sampling``, ...) work unchanged.
    X_training, y_training : array-like, optional
        The initial labelled set.
    roi_training : array-like (n, H, W), optional
        ROI masks of the initial labelled set.
    random_state : int, RandomState instance or None, default=None
        Passed (as a generator advanced query after query) to strategies that
        take a ``random_state`` and are not given one, so query sequences are
        reproducible.

    Attributes
    ----------
    estimator_ : fitted estimator
    X_training_, y_training_ : ndarray
        All labelled images and labels so far.
    roi_training_ : ndarray of bool (n, H, W)
        Their ROI masks (all False where none was given).
    roi_available_ : ndarray of bool (n,)
        Whether a non-empty ROI was given for each labelled image.
    n_queries_ : int
        Number of ``query`` calls so far.
    query_scores_ : Bunch or None
        The scores the strategy itself computed for the last queried samples
        (``uncertainty``, ``alignment``, ``misalignment``, ``combined``, in
        query order), for strategies that take ``return_scores``; None for
        others (such as modAL's).
    """

    def __init__(self, estimator, query_strategy=dual_criterion_sampling, X_training=None,
                 y_training=None, roi_training=None, random_state=None):
        self.estimator = estimator
        self.query_strategy = query_strategy
        self.X_training = X_training
        self.y_training = y_training
        self.roi_training = roi_training
        self.random_state = random_state

    # --- repr: parameters as scikit-learn shows them, the data summarised by shape --------
    _DATA_PARAMS = ("X_training", "y_training", "roi_training")

    def _summarised(self):
        shown = copy.copy(self)
        for name in self._DATA_PARAMS:
            value = getattr(self, name)
            if value is not None:
                setattr(shown, name, _Summary(value))
        return shown

    def __repr__(self, N_CHAR_MAX=700):
        return BaseEstimator.__repr__(self._summarised(), N_CHAR_MAX)

    def _get_params_html(self, deep=True, doc_link=""):
        # the notebook (HTML) display lists parameters too
        return BaseEstimator._get_params_html(self._summarised(), deep, doc_link)

    # --- labelled set -----------------------------------------------------------
    @staticmethod
    def _check_labelled(X, y, roi_masks):
        X = check_images(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per image ({len(X)}); got shape {y.shape}.")
        masks, available = check_roi_masks(roi_masks, len(X), X.shape[2:])
        return X, y, masks, available

    def _fit_estimator(self, estimator, X, y, masks, only_new=False, bootstrap=False,
                       fit_kwargs=None):
        method = "partial_fit" if only_new and hasattr(estimator, "partial_fit") else "fit"
        if bootstrap:  # as modAL: n draws with replacement, from the learner's generator
            idx = self._query_random_state().randint(len(y), size=len(y))
            X, y, masks = X[idx], y[idx], masks[idx]
        kwargs = dict(fit_kwargs or {})
        key = roi_fit_param(estimator, method)
        if key is not None and _uses_roi_masks(estimator):
            kwargs[key] = masks
        getattr(estimator, method)(X, y, **kwargs)
        return estimator

    def fit(self, X, y, roi_masks=None, bootstrap=False, **fit_kwargs):
        """Replace the labelled set by ``X, y`` (and their ROI masks) and fit on it.

        The masks reach the estimator's ``fit`` when it accepts ``roi_masks``
        (a :class:`~xal_sklearn.CNNClassifier` with ``roi_loss`` set, or a
        Pipeline ending in one); other estimators are fitted on ``X, y``. On
        error the learner is left as it was.

        Parameters
        ----------
        X, y : the labelled images and labels
        roi_masks : array-like (n, H, W), optional
        bootstrap : bool, default=False
            As in modAL: fit on a bootstrap sample of ``X, y`` (drawn from the
            learner's seeded generator); the labelled set stays ``X, y``.
        **fit_kwargs
            Passed to the estimator's ``fit`` (modAL's convention).
        """
        X, y, masks, available = self._check_labelled(X, y, roi_masks)
        return self._commit(self._fit_estimator(clone(self.estimator), X, y, masks,
                                                bootstrap=bootstrap, fit_kwargs=fit_kwargs),
                            X, y, masks, available)

    def _commit(self, estimator, X, y, masks, available):
        # state changes only here, after fitting succeeded
        self.estimator_ = estimator
        self.X_training_, self.y_training_ = X, y
        self.roi_training_, self.roi_available_ = masks, available
        self.classes_ = getattr(estimator, "classes_", np.unique(y))
        self.n_queries_ = getattr(self, "n_queries_", 0)
        return self

    def _ensure_fitted(self):
        if hasattr(self, "estimator_"):
            return
        if self.X_training is None:
            if self.y_training is not None:
                raise ValueError("y_training was given without X_training.")
            raise ValueError(
                "This ActiveLearner has no labelled data yet: pass X_training/y_training "
                "or call fit() or teach() first."
            )
        self.fit(self.X_training, self.y_training, self.roi_training)

    def teach(self, X, y, roi_masks=None, only_new=False, bootstrap=False, **fit_kwargs):
        """Add labelled images (with their ROI masks) and refit.

        Parameters
        ----------
        X, y : the newly labelled images and labels
        roi_masks : array-like (n, H, W), optional
        only_new : bool, default=False
            If True, continue training on the new samples only
            (``partial_fit``); else refit on the whole labelled set.
        bootstrap : bool, default=False
            As in modAL: train on a bootstrap sample of what would be trained on.
        **fit_kwargs
            Passed to the estimator's ``fit`` / ``partial_fit``.

        On error nothing changes: the labelled set and the fitted model stay
        as they were.
        """
        X, y, masks, available = self._check_labelled(X, y, roi_masks)
        if hasattr(self, "estimator_"):
            old = (self.X_training_, self.y_training_, self.roi_training_, self.roi_available_)
        elif self.X_training is not None:  # not fitted yet: fit once on old + new
            old = self._check_labelled(self.X_training, self.y_training, self.roi_training)
            only_new = False
        else:
            return self.fit(X, y, masks, bootstrap=bootstrap, **fit_kwargs)
        if X.shape[1:] != old[0].shape[1:]:
            raise ValueError(
                f"New images have shape {X.shape[1:]} but the labelled set has {old[0].shape[1:]}."
            )
        X_all, y_all, masks_all, available_all = (
            np.concatenate([a, b]) for a, b in zip(old, (X, y, masks, available))
        )
        if only_new:
            estimator = self._fit_estimator(copy.deepcopy(self.estimator_), X, y, masks,
                                            only_new=True, bootstrap=bootstrap,
                                            fit_kwargs=fit_kwargs)
        else:
            estimator = self._fit_estimator(clone(self.estimator), X_all, y_all, masks_all,
                                            bootstrap=bootstrap, fit_kwargs=fit_kwargs)
        return self._commit(estimator, X_all, y_all, masks_all, available_all)

    # --- querying ---------------------------------------------------------------
    def query(self, X_pool, n_instances=1, **query_kwargs):
        """Ask the query strategy which pool samples to label next.

        Parameters
        ----------
        X_pool : array-like (N, C, H, W), memmap or torch Dataset
        n_instances : int, default=1
        **query_kwargs
            Passed to the strategy, e.g. ``roi_masks=M_pool, alpha=0.3``.

        Returns
        -------
        query_idx : ndarray of int (n_instances,)
        X_query : the selected pool samples, ``X_pool[query_idx]`` (a list of
            items for a torch ``Dataset`` pool)
        """
        n_instances = check_n_instances(n_instances, pool_length(X_pool))
        self._ensure_fitted()
        kwargs = dict(query_kwargs)
        if "random_state" not in kwargs and accepts_keyword(self.query_strategy, "random_state"):
            kwargs["random_state"] = self._query_random_state()
        reports = accepts_keyword(self.query_strategy, "return_scores")
        if reports:
            kwargs.setdefault("return_scores", True)
        result = self.query_strategy(self, X_pool, n_instances=n_instances, **kwargs)
        scores = None
        if isinstance(result, tuple):  # (idx, scores) from ours; old modAL ones give (idx, X)
            result, scores = result[0], (result[1] if reports and kwargs["return_scores"]
                                         else None)
        idx = np.asarray(result)
        if (idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) != n_instances
                or len(np.unique(idx)) != len(idx) or idx.min() < 0
                or idx.max() >= pool_length(X_pool)):
            raise ValueError(
                f"The query strategy must return {n_instances} distinct integer pool indices; "
                f"got {result!r}."
            )
        self.n_queries_ += 1
        self.query_scores_ = scores
        return idx, _take(X_pool, idx)

    def _query_random_state(self):
        """The generator handed to strategies, created from ``random_state`` on first use."""
        if not hasattr(self, "_query_rng"):
            self._query_rng = check_random_state(self.random_state)
        return self._query_rng

    # --- prediction ---------------------------------------------------------------
    def predict(self, X, **predict_kwargs):
        """Predicted labels of the fitted estimator (keywords passed on, as in modAL)."""
        self._ensure_fitted()
        return self.estimator_.predict(X, **predict_kwargs)

    def predict_proba(self, X, **predict_proba_kwargs):
        """Class probabilities of the fitted estimator (keywords passed on, as in modAL)."""
        self._ensure_fitted()
        return self.estimator_.predict_proba(X, **predict_proba_kwargs)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of the fitted estimator on ``X, y``."""
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "estimator_")

    # --- saving without pickle ------------------------------------------------------
    _FORMAT, _VERSION = "xal-active-learner", 1

    def save(self, path, include_data=True):
        """Save the fitted learner to the folder ``path``, atomically and without pickle.

        The folder holds ``learner.json`` (format version, query count, the query
        generator's state, the estimator's fitted attributes), ``estimator.pt``
        (the network's weights through skorch's ``save_params``) and, with
        ``include_data``, ``labelled.npz`` (images, labels, ROI masks; plain arrays).
        A crash leaves the previous save intact. Only skorch networks (such as
        :class:`~xal_sklearn.CNNClassifier`) can be saved.

        Parameters
        ----------
        path : path-like
        include_data : bool, default=True
            False leaves the labelled images out (the caller keeps them, as an
            experiment or a labelling campaign does) and :meth:`load` then needs them.
        """
        self._ensure_fitted()
        if not hasattr(self.estimator_, "save_params"):
            raise TypeError(f"save supports skorch networks; the estimator is "
                            f"{type(self.estimator_).__name__}.")
        y = np.asarray(self.y_training_)
        if include_data and y.dtype == object:
            raise TypeError("Labels of dtype object cannot be saved without pickle; use "
                            "numbers or strings.")
        with atomic_folder(path) as tmp:
            attrs = save_net(self.estimator_, tmp / "estimator.pt")
            meta = {"format": self._FORMAT, "version": self._VERSION,
                    "n_labelled": int(len(y)), "has_data": bool(include_data),
                    "n_queries": int(self.n_queries_),
                    "query_rng": rng_to_json(self._query_random_state()),
                    "random_state": (self.random_state
                                     if isinstance(self.random_state, (int, type(None)))
                                     else None),
                    "estimator_attrs": attrs,
                    "query_strategy": getattr(self.query_strategy, "__qualname__", None)}
            if include_data:
                np.savez(tmp / "labelled.npz", X=self.X_training_, y=y,
                         roi_masks=self.roi_training_, roi_available=self.roi_available_)
            (tmp / "learner.json").write_text(json.dumps(meta, indent=1))
        return self

    @classmethod
    def load(cls, path, estimator, query_strategy=dual_criterion_sampling, X_training=None,
             y_training=None, roi_training=None):
        """Load a learner saved by :meth:`save`; runs no code from the folder.

        Parameters
        ----------
        path : path-like
        estimator : skorch network
            Unfitted template of the saved network (same class and parameters);
            the saved weights are loaded into a clone of it.
        query_strategy : callable, default=dual_criterion_sampling
            Strategies are code, so they are given here rather than loaded.
        X_training, y_training, roi_training : array-like, optional
            The labelled set, needed when it was saved with ``include_data=False``.
        """
        path, meta = cls._read_meta(path)
        if meta["has_data"]:
            with np.load(path / "labelled.npz", allow_pickle=False) as f:
                X, y, masks, available = (f["X"], f["y"], f["roi_masks"], f["roi_available"])
        else:
            if X_training is None or y_training is None:
                raise ValueError(f"{path} was saved without its labelled images; pass "
                                 "X_training and y_training.")
            X, y, masks, available = cls._check_labelled(X_training, y_training, roi_training)
        if len(y) != meta["n_labelled"]:
            raise ValueError(f"{path} was saved with {meta['n_labelled']} labelled samples; "
                             f"got {len(y)}.")
        net = cls.load_estimator(path, estimator)
        learner = cls(estimator, query_strategy, random_state=meta["random_state"])
        learner._commit(net, X, y, masks, available)
        learner.n_queries_ = meta["n_queries"]
        rng_from_json(learner._query_random_state(), meta["query_rng"])
        return learner

    @classmethod
    def _read_meta(cls, path):
        path = resolve_folder(path)
        meta = read_json(path / "learner.json")
        check_format(meta, cls._FORMAT, cls._VERSION, str(path))
        return path, meta

    @classmethod
    def load_estimator(cls, path, estimator):
        """Only the fitted network of a learner saved by :meth:`save` (a clone of ``estimator``)."""
        path, meta = cls._read_meta(path)
        return load_net(estimator, path / "estimator.pt", meta["estimator_attrs"])


def roi_fit_param(estimator, method="fit"):
    """The keyword under which ``estimator.<method>`` takes ROI masks, or None.

    ``"roi_masks"`` for an estimator whose method has that parameter;
    ``"<step>__roi_masks"`` for a Pipeline whose last step's method has it.
    """
    steps = getattr(estimator, "steps", None)
    if steps:  # a Pipeline routes "<step>__<param>" to that step's fit
        name, last = steps[-1]
        return f"{name}__roi_masks" if roi_fit_param(last, method) else None
    func = getattr(estimator, method, None)
    return "roi_masks" if func is not None and accepts_keyword(func, "roi_masks") else None


def _uses_roi_masks(estimator):
    # a CNNClassifier without roi_loss would only warn that it ignores them
    last = estimator.steps[-1][1] if getattr(estimator, "steps", None) else estimator
    return getattr(last, "roi_loss", True) is not None
