"""A modAL-compatible active learner that keeps ROI masks and follows sklearn's contract."""

import copy
import json
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from torch.utils.data import Dataset

from ._persist import (atomic_folder, check_format, load_net, read_json, resolve_folder,
                       rng_from_json, rng_to_json, save_net)
from ._pool import pool_length
from ._validation import (accepts_keyword, check_images, check_n_instances, check_roi_masks,
                          roi_annotated)
from .roi_model import ROIPredictor, predict_pool_rois
from .strategies import dual_criterion_sampling

#: Where a pool image's ROI came from, as ``pool_roi_source_`` and ``query_scores_.roi_source``
#: record it: the caller's masks, the ROI model's, or none (``missing_roi`` applies).
ROI_SOURCES = ("given", "predicted", "none")


class NoROIModelWarning(UserWarning):
    """The learner has an ROI model but no labelled image with an ROI to fit it on yet."""


class QueryWithoutROIWarning(UserWarning):
    """Most of a queried batch had no ROI, so attention did not take part in choosing it."""


__all__ = ["ActiveLearner", "NoROIModelWarning", "QueryWithoutROIWarning", "ROI_SOURCES"]


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

    Following scikit-learn, the constructor only stores its arguments (modAL's
    trains at once): the estimator is cloned and fitted on ``X_training,
    y_training`` at the first call that needs it (``query``, ``predict``,
    ``teach`` ...), so the first ``query`` also takes one training; call
    ``fit(X0, y0, roi_masks)`` to train at a moment of your choosing.

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
    roi_model : ROIPredictor, callable or None, default=None
        Where the pool's ROIs come from when the caller passes none. An estimator
        (:class:`~xal_sklearn.ROIPredictor`) is cloned and fitted at every
        ``fit``/``teach`` on the labelled images that carry an ROI annotation
        (annotated-empty ones included), and its predicted masks go to any
        strategy that takes ``roi_masks`` when the query gives none; a plain
        callable ``f(X) -> masks`` (organ masks from any segmentation program) is
        used as it is. Masks the caller passes win; with a list, its ``None``
        entries are filled in. A pool image whose predicted ROI is empty (no pixel
        reaches the model's ``threshold``) follows the strategy's ``missing_roi``.
        While no labelled image has an ROI the model is not fitted and the
        strategy falls back likewise (one ``NoROIModelWarning`` says so).

    Attributes
    ----------
    estimator_ : fitted estimator
    X_training_, y_training_ : ndarray
        All labelled images and labels so far.
    roi_training_ : ndarray of bool (n, H, W)
        Their ROI masks (all False where none was given).
    roi_available_ : ndarray of bool (n,)
        Whether a non-empty ROI was given for each labelled image.
    roi_annotated_ : ndarray of bool (n,)
        Whether an ROI annotation was given (an empty mask in an array counts:
        annotated, no lesion; a ``None`` entry does not).
    roi_model_ : fitted ROIPredictor, the callable, or None
        None without ``roi_model``, or while no labelled image has an ROI.
    pool_roi_source_ : ndarray of str (N,) or None
        For the last query, where each pool image's ROI came from: "given",
        "predicted" or "none" (None when the strategy takes no ``roi_masks``).
    n_queries_ : int
        Number of ``query`` calls so far.
    query_scores_ : Bunch or None
        The scores the strategy itself computed for the last queried samples
        (``uncertainty``, ``alignment``, ``misalignment``, ``combined``, in
        query order), for strategies that take ``return_scores``; None for
        others (such as modAL's). With pool ROIs in play it also has
        ``roi_source`` (see ``pool_roi_source_``).
    """

    def __init__(self, estimator, query_strategy=dual_criterion_sampling, X_training=None,
                 y_training=None, roi_training=None, random_state=None, roi_model=None):
        self.estimator = estimator
        self.query_strategy = query_strategy
        self.X_training = X_training
        self.y_training = y_training
        self.roi_training = roi_training
        self.random_state = random_state
        self.roi_model = roi_model

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
        return X, y, masks, available, roi_annotated(roi_masks, len(X))

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
        X, y, masks, available, annotated = self._check_labelled(X, y, roi_masks)
        estimator = self._fit_estimator(clone(self.estimator), X, y, masks,
                                        bootstrap=bootstrap, fit_kwargs=fit_kwargs)
        return self._commit(estimator, X, y, masks, available, annotated,
                            self._fit_roi_model(X, masks, annotated))

    def _fit_roi_model(self, X, masks, annotated):
        """A fitted copy of ``roi_model`` on the annotated labelled images (or None)."""
        if self.roi_model is None:
            return None
        if not hasattr(self.roi_model, "fit"):
            if not callable(self.roi_model):
                raise TypeError("roi_model must be an ROIPredictor (an estimator with fit and "
                                f"predict) or a callable f(X) -> masks; got {self.roi_model!r}.")
            return self.roi_model  # a fixed program: nothing to learn
        if not annotated.any():
            warnings.warn("No labelled image has an ROI yet, so the ROI model is not fitted "
                          "and the pool has no ROIs: strategies that compare attention with "
                          "the ROI fall back as their missing_roi says (by default: "
                          "uncertainty).", NoROIModelWarning, stacklevel=3)
            return None
        previous = getattr(self, "roi_model_", None)
        if getattr(self.roi_model, "warm_start", False) and hasattr(previous, "module_"):
            # continues from last round's weights, with the template's settings
            model = copy.deepcopy(previous).set_params(**self.roi_model.get_params())
        else:
            model = clone(self.roi_model)
        return model.fit(X[annotated], masks[annotated])

    def _commit(self, estimator, X, y, masks, available, annotated, roi_model):
        # state changes only here, after fitting succeeded
        self.estimator_ = estimator
        self.X_training_, self.y_training_ = X, y
        self.roi_training_, self.roi_available_ = masks, available
        self.roi_annotated_ = annotated
        self.roi_model_ = roi_model
        self.classes_ = getattr(estimator, "classes_", np.unique(y))
        self.n_queries_ = getattr(self, "n_queries_", 0)
        self.pool_roi_source_ = getattr(self, "pool_roi_source_", None)
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
        X, y, masks, available, annotated = self._check_labelled(X, y, roi_masks)
        if hasattr(self, "estimator_"):
            old = (self.X_training_, self.y_training_, self.roi_training_, self.roi_available_,
                   self.roi_annotated_)
        elif self.X_training is not None:  # not fitted yet: fit once on old + new
            old = self._check_labelled(self.X_training, self.y_training, self.roi_training)
            only_new = False
        else:
            return self.fit(X, y, roi_masks, bootstrap=bootstrap, **fit_kwargs)
        if X.shape[1:] != old[0].shape[1:]:
            raise ValueError(
                f"New images have shape {X.shape[1:]} but the labelled set has {old[0].shape[1:]}."
            )
        X_all, y_all, masks_all, available_all, annotated_all = (
            np.concatenate([a, b]) for a, b in zip(old, (X, y, masks, available, annotated))
        )
        if only_new:
            estimator = self._fit_estimator(copy.deepcopy(self.estimator_), X, y, masks,
                                            only_new=True, bootstrap=bootstrap,
                                            fit_kwargs=fit_kwargs)
        else:
            estimator = self._fit_estimator(clone(self.estimator), X_all, y_all, masks_all,
                                            bootstrap=bootstrap, fit_kwargs=fit_kwargs)
        return self._commit(estimator, X_all, y_all, masks_all, available_all, annotated_all,
                            self._fit_roi_model(X_all, masks_all, annotated_all))

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
        sources = None
        if accepts_keyword(self.query_strategy, "roi_masks"):
            kwargs["roi_masks"], sources = self._pool_rois(X_pool, kwargs.get("roi_masks"))
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
        if scores is not None and sources is not None:
            scores["roi_source"] = sources[idx]
        self.query_scores_ = scores
        self.pool_roi_source_ = sources
        if sources is not None:
            self._say_if_mostly_without_roi(kwargs["roi_masks"], idx)
        return idx, _take(X_pool, idx)

    def _pool_rois(self, X_pool, given):
        """The pool's ROI masks for the strategy, and where each came from."""
        n = pool_length(X_pool)
        partial = isinstance(given, (list, tuple)) and any(m is None for m in given)
        if given is not None and not partial:  # the caller's masks win
            return given, np.full(n, "given", dtype=object)
        model = getattr(self, "roi_model_", None)
        if given is None and model is None:  # nothing to pass on: as the caller asked
            return None, np.full(n, "none", dtype=object)
        sources = np.full(n, "none", dtype=object)
        predicted = None if model is None else predict_pool_rois(model, X_pool)
        shape = tuple(predicted.shape[1:]) if predicted is not None else _spatial_shape(X_pool)
        masks = np.zeros((n,) + shape, dtype=bool)
        if partial:  # the caller's masks where it gave one
            masks, _ = check_roi_masks(given, n, shape)
            sources[roi_annotated(given, n)] = "given"
        if predicted is not None:  # the model's where it drew one
            fill = (sources == "none") & predicted.reshape(n, -1).any(axis=1)
            masks[fill], sources[fill] = predicted[fill], "predicted"
        return masks, sources

    @staticmethod
    def _say_if_mostly_without_roi(masks, idx):
        """One warning when most of a batch was chosen without an ROI to judge attention by,
        though the pool has ROIs (without any, the strategy itself says so)."""
        if masks is None:
            return
        has = np.array([masks[int(i)] is not None and np.asarray(masks[int(i)]).any()
                        for i in idx])
        if len(idx) >= 2 and (~has).sum() * 2 > len(idx):
            warnings.warn(f"{int((~has).sum())} of the {len(idx)} queried images have no ROI "
                          "(none given, none predicted), so their attention could not be "
                          "judged: they were ranked as the strategy's missing_roi says.",
                          QueryWithoutROIWarning, stacklevel=3)

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
        (the network's weights through skorch's ``save_params``), ``roi_model.pt`` when
        the learner has a fitted :class:`~xal_sklearn.ROIPredictor` (a callable
        ``roi_model`` is code: it is given again to :meth:`load`) and, with
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
            roi_kind = None
            if self.roi_model_ is not None and hasattr(self.roi_model_, "save"):
                self.roi_model_.save(tmp / "roi_model.pt")
                roi_kind = "fitted"
            elif self.roi_model is not None:
                roi_kind = "callable" if not hasattr(self.roi_model, "fit") else "unfitted"
            meta = {"format": self._FORMAT, "version": self._VERSION,
                    "n_labelled": int(len(y)), "has_data": bool(include_data),
                    "n_queries": int(self.n_queries_),
                    "query_rng": rng_to_json(self._query_random_state()),
                    "random_state": (self.random_state
                                     if isinstance(self.random_state, (int, type(None)))
                                     else None),
                    "estimator_attrs": attrs,
                    "query_strategy": getattr(self.query_strategy, "__qualname__", None),
                    "roi_model": roi_kind}
            if include_data:
                np.savez(tmp / "labelled.npz", X=self.X_training_, y=y,
                         roi_masks=self.roi_training_, roi_available=self.roi_available_,
                         roi_annotated=self.roi_annotated_)
            (tmp / "learner.json").write_text(json.dumps(meta, indent=1))
        return self

    @classmethod
    def load(cls, path, estimator, query_strategy=dual_criterion_sampling, X_training=None,
             y_training=None, roi_training=None, roi_model=None):
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
        roi_model : ROIPredictor or callable, optional
            The saved learner's ``roi_model``: a callable must be given again; an
            unfitted ROIPredictor is the template the saved one must match (its
            ``n_filters``); left out, the saved ROI model's own parameters are used.
        """
        path, meta = cls._read_meta(path)
        if meta["has_data"]:
            with np.load(path / "labelled.npz", allow_pickle=False) as f:
                X, y, masks, available = (f["X"], f["y"], f["roi_masks"], f["roi_available"])
                annotated = f["roi_annotated"] if "roi_annotated" in f.files else available
        else:
            if X_training is None or y_training is None:
                raise ValueError(f"{path} was saved without its labelled images; pass "
                                 "X_training and y_training.")
            X, y, masks, available, annotated = cls._check_labelled(X_training, y_training,
                                                                    roi_training)
        if len(y) != meta["n_labelled"]:
            raise ValueError(f"{path} was saved with {meta['n_labelled']} labelled samples; "
                             f"got {len(y)}.")
        net = cls.load_estimator(path, estimator)
        kind = meta.get("roi_model")
        fitted_roi = None
        if kind == "fitted":
            if roi_model is not None and not isinstance(roi_model, ROIPredictor):
                raise ValueError(f"{path} holds a fitted ROIPredictor; roi_model must be an "
                                 f"ROIPredictor template or None, got {roi_model!r}.")
            fitted_roi = ROIPredictor.load(path / "roi_model.pt", template=roi_model)
            roi_model = roi_model if roi_model is not None else clone(fitted_roi)
        elif kind == "callable":
            if roi_model is None or hasattr(roi_model, "fit") or not callable(roi_model):
                raise ValueError(f"{path} was saved with a callable roi_model, which is code "
                                 "and not saved: pass it again as roi_model.")
            fitted_roi = roi_model
        elif kind == "unfitted" and roi_model is None:
            raise ValueError(f"{path} was saved with an ROI model that no labelled ROI had "
                             "fitted yet: pass its template as roi_model.")
        elif roi_model is not None and kind is None:
            raise ValueError(f"{path} was saved without an ROI model; roi_model cannot be "
                             "added at load (fit or teach with it instead).")
        learner = cls(estimator, query_strategy, random_state=meta["random_state"],
                      roi_model=roi_model)
        learner._commit(net, X, y, masks, available, annotated, fitted_roi)
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


def _spatial_shape(X_pool):
    """``(H, W)`` of a pool's images (arrays by their shape, Datasets by their first item)."""
    if hasattr(X_pool, "shape"):
        return tuple(X_pool.shape[2:])
    item = X_pool[0]
    image = item[0] if isinstance(item, (tuple, list)) else item
    return tuple(np.shape(image)[1:])


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
