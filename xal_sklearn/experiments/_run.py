"""Simulated pool-based active learning with the known labels as the oracle."""

import hashlib
import inspect
import json
import math
import os
import platform
import re
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from .._persist import (atomic_folder, atomic_write, check_format, read_json,
                        resolve_folder)
from .._validation import accepts_keyword, check_images, with_missing
from .._version import __version__
from ..alignment import ALIGNMENT_METRICS, alignment_t, chance_alignment
from ..datasets import group_train_test_split
from ..learner import ActiveLearner
from ..roi_loss import with_legacy_settings
from ..roi_model import ROIPredictor, roi_model_quality
from ..scoring import score_pool
from ..strategies import SCORE_FIELDS, NoROIWarning

__all__ = ["run_experiment", "load_results", "METRICS", "ATTENTION_METRICS",
           "POOL_ROIS", "ResultsFolderError"]

#: Where the strategies' pool ROIs come from in a simulation (``pool_rois``): the data
#: set's expert masks of every pool image (an oracle outside retrospective studies),
#: an ROI model's predictions trained on the labelled images' ROIs, or none at all.
POOL_ROIS = ("given", "predicted", "none")


class ResultsFolderError(ValueError):
    """``out_dir`` holds results of another configuration (``out_dir`` names the folder,
    ``detail`` what differs where that is known)."""

    def __init__(self, message, out_dir, detail=None):
        super().__init__(message)
        self.out_dir = out_dir
        self.detail = detail

#: One results column per alignment metric of the registry: its mean over test images with an ROI.
ATTENTION_METRICS = tuple(f"attention_{name}" for name in ALIGNMENT_METRICS)
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr") + ATTENTION_METRICS
_STATE_VERSION = 2


# --- configuration --------------------------------------------------------------------

def _normalise_strategies(strategies):
    if not isinstance(strategies, dict) or not strategies:
        raise ValueError("strategies must be a non-empty dict: name -> callable, "
                         "(callable, kwargs) or (callable, kwargs, estimator_params).")
    out = {}
    for name, spec in strategies.items():
        spec = spec if isinstance(spec, tuple) else (spec,)
        if not 1 <= len(spec) <= 3:
            raise ValueError(f"Strategy {name!r}: give a callable, (callable, kwargs) or "
                             "(callable, kwargs, estimator_params).")
        func, kwargs, params = (tuple(spec) + ({}, {}))[:3]
        if not callable(func):
            raise TypeError(f"Strategy {name!r} is not callable: {func!r}.")
        if not isinstance(kwargs, dict):
            raise TypeError(f"Keyword arguments of strategy {name!r} must be a dict.")
        if not isinstance(params, dict):
            raise TypeError(f"Estimator parameters of strategy {name!r} must be a dict.")
        if "/" in name or name.startswith("."):
            raise ValueError(f"Strategy name {name!r} may not contain '/' or start with '.'.")
        out[str(name)] = (func, dict(kwargs), dict(params))
    return out


def _strategy_estimator(estimator, params, seed):
    """The unfitted estimator of one run: the template with the strategy's own parameters."""
    return _set_random_state(clone(estimator).set_params(**params), seed)


def _qualname(func):
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _stable_repr(value):
    # object reprs carry memory addresses, which differ from run to run, and a set's
    # order changes with the process's string hashing (skorch's _params_to_validate)
    if isinstance(value, (set, frozenset)) and value:
        return "{" + ", ".join(sorted(_stable_repr(v) for v in value)) + "}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _jsonable(value):
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    return _stable_repr(value)


def _fingerprint(dataset):
    h = hashlib.sha256()
    for key in ("y", "groups", "roi_available"):
        if key in dataset:  # with an explicit test set, groups are not needed
            h.update(np.ascontiguousarray(np.asarray(dataset[key]).astype(str)).tobytes())
    X = np.asarray(dataset["X"])
    h.update(str(X.shape).encode())
    h.update(np.ascontiguousarray(X[:: max(1, len(X) // 64)]).tobytes())  # a sample of images
    return h.hexdigest()[:16]


def _versions():
    import captum
    import skorch
    import sklearn

    return {"xal_sklearn": __version__, "torch": torch.__version__, "skorch": skorch.__version__,
            "scikit-learn": sklearn.__version__, "captum": captum.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _check_sizes(initial_size, query_size, budget, n_train):
    for name, value in (("initial_size", initial_size), ("query_size", query_size),
                        ("budget", budget)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if budget < initial_size:
        raise ValueError(f"budget ({budget}) is smaller than the initial labelled set "
                         f"({initial_size}).")
    if budget > n_train:
        raise ValueError(f"budget ({budget}) exceeds the training split ({n_train} samples).")


_OPTIMIZERS = {"Adam": torch.optim.Adam, "SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW}


#: Parameters added after results folders existed, recorded only when set: folders of
#: earlier versions keep their configuration hash and resume.
_RECORDED_WHEN_SET = ("class_weight",)


def _template(estimator):
    """JSON form of a CNNClassifier with its default module, to rebuild it from config."""
    from ..classifier import CNNClassifier
    from ..modules import DEFAULT_CONTEXT_CHANNELS, SmallCNN

    if type(estimator) is not CNNClassifier or estimator.module is not SmallCNN:
        return None
    params = estimator.get_params(deep=False)
    if (params["criterion"] is not torch.nn.CrossEntropyLoss
            or params["optimizer"] not in _OPTIMIZERS.values()):
        return None
    defaults = CNNClassifier().get_params(deep=False)
    simple = {k: v for k, v in params.items()
              if isinstance(v, (bool, int, float, str, type(None)))
              and k != "random_state" and not k.startswith("_")}
    rest = {k for k in set(params) - set(simple) - {"module", "criterion", "optimizer",
                                                   "random_state", "_params_to_validate"}
            if params[k] is not defaults.get(k)}
    if rest:
        return None  # e.g. callback objects or another iterator class: not JSON
    # recorded even at its default, which has changed (0 before the branch existed): a
    # folder of the old network then has another hash and is never resumed with the new
    simple.setdefault("module__context_channels", DEFAULT_CONTEXT_CHANNELS)
    for key in _RECORDED_WHEN_SET:
        if key in simple and simple[key] is None:
            del simple[key]
    return dict(simple, optimizer=params["optimizer"].__name__)


def estimator_template(config, strategy=None):
    """The unfitted network of an experiment, rebuilt from its ``config.json`` (no code run).

    With ``strategy``, that strategy's own estimator parameters are applied.
    """
    from ..classifier import CNNClassifier

    template = config.get("template")
    if not template:
        raise ValueError("This experiment's network cannot be rebuilt from config.json (it is "
                         "not a CNNClassifier with SmallCNN); pass estimator=.")
    params = {} if strategy is None else \
        config["strategies"][strategy].get("estimator_params", {})
    # recorded before these parameters existed
    template = with_legacy_settings(template, ("roi_balance", "roi_conflict"))
    template = {"module__context_channels": 0, **template}  # before SmallCNN had the branch
    return CNNClassifier(**dict(template, optimizer=_OPTIMIZERS[template["optimizer"]],
                                **params))


class RareClassWarning(UserWarning):
    """A class has too few images for the split and the initial set to both see it."""


def _warn_rare_classes(dataset, y, n_classes, test_size):
    """One warning naming each class with fewer images than a test split of ``test_size``
    (None: an explicit test set) and the pool need to hold one each; often a mistyped
    label that made a class of its own."""
    need = 2 if test_size is None else max(2, math.ceil(1 / test_size))
    names = [str(v) for v in np.asarray(dataset.get("target_names", np.arange(n_classes)))]
    counts = np.bincount(y.astype(np.intp), minlength=n_classes)
    rare = [f"{names[c]!r} ({counts[c]})" for c in range(n_classes) if counts[c] < need]
    if rare:
        where = ("the pool" if test_size is None else
                 f"a test split of {test_size:.0%} of the groups and the pool")
        warnings.warn(f"Class(es) {', '.join(rare)} have fewer than {need} images, too few for "
                      f"{where} to hold one each (a mistyped label makes such a class). "
                      "Images per class: " + ", ".join(f"{n} {k}" for n, k in
                                                       zip(names, counts.tolist())) + ".",
                      RareClassWarning, stacklevel=3)


def _set_random_state(estimator, seed):
    params = estimator.get_params()
    keys = [k for k in params if k == "random_state" or k.endswith("__random_state")]
    return estimator.set_params(**{k: seed for k in keys}) if keys else estimator


# --- one (strategy, seed) run ---------------------------------------------------------

def _masks(dataset, idx):
    masks = np.asarray(dataset["roi_masks"])[idx]
    available = np.asarray(dataset["roi_available"])[idx]
    return np.where(available[:, None, None], masks, False)


def _without_roi(dataset, idx):
    """How many of the images ``idx`` have no expert ROI (a missing or empty mask, like a
    normal image's): for the report, never for selection."""
    return int((~_masks(dataset, idx).reshape(len(idx), -1).any(axis=1)).sum())


def _annotations(dataset, idx):
    """The ROI annotations of labelled images, as the learner takes them: an array when
    every image is annotated (an empty mask: annotated, no lesion), else a list with
    None for the images nobody drew on."""
    return with_missing(np.asarray(dataset["roi_masks"])[idx],
                        np.asarray(dataset["roi_available"])[idx])


def _roi_model_row(learner, X_test, annotations_test):
    """The ROI model's quality on the test split (NaN without a fitted model)."""
    model = getattr(learner, "roi_model_", None)
    row = {"n_labelled_rois": int(np.sum(getattr(learner, "roi_annotated_", 0)))}
    if model is None:
        return dict(row, roi_model_dice=np.nan, roi_model_roi_auc=np.nan)
    q = roi_model_quality(model, X_test, annotations_test)
    return dict(row, roi_model_dice=q.dice, roi_model_roi_auc=q.roi_auc)


def _class_ratio(y, n_classes):
    """The largest class's count over the smallest's (inf when a class is absent)."""
    counts = np.bincount(np.asarray(y, dtype=np.intp), minlength=n_classes)
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")


def _evaluate(learner, X_test, y_true, masks_test, n_classes):
    s = score_pool(learner, X_test, masks_test, return_maps=True, progress=False)
    y_pred = s.y_pred
    row = {
        "accuracy": accuracy_score(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, average="macro", labels=np.arange(n_classes),
                             zero_division=0),
        "roc_auc_ovr": np.nan,
        # flags of a degenerate model, which the report points out
        "n_predicted_classes": int(len(np.unique(y_pred))),
        # the test split's balance: the report puts balanced accuracy beside accuracy
        # when its classes are of unequal size
        "test_class_ratio": _class_ratio(y_true, n_classes),
        "blank_map_fraction": float(np.mean(s.blank_map)),
    }
    has_roi = s.roi_available
    maps, masks = torch.from_numpy(s.maps[has_roi]), torch.from_numpy(masks_test[has_roi])
    for name, column in zip(ALIGNMENT_METRICS, ATTENTION_METRICS):
        row[column] = (float(np.nanmean(alignment_t(name, maps.double(), masks).numpy()))
                       if has_roi.any() else np.nan)
    if len(np.unique(y_true)) == n_classes:
        proba = s.proba / s.proba.sum(1, keepdims=True)
        row["roc_auc_ovr"] = (roc_auc_score(y_true, proba[:, 1]) if n_classes == 2 else
                              roc_auc_score(y_true, proba, multi_class="ovr",
                                            labels=np.arange(n_classes)))
    return row, s.grid_shape


def _chance_levels(masks_test, grid_shape, seed):
    """Each metric's value for random maps on the attention grid (see chance_alignment)."""
    has_roi = masks_test.reshape(len(masks_test), -1).any(axis=1)
    return {f"chance_{name}": (chance_alignment(masks_test[has_roi], name, grid_shape,
                                                random_state=seed) if has_roi.any() else np.nan)
            for name in ALIGNMENT_METRICS}


def _checkpoint_path(out_dir, name, seed):
    """Folder of one run's checkpoint: ``progress.json`` and the learner (no pickle)."""
    return Path(out_dir) / "checkpoints" / f"{name}__seed{seed}"


def read_checkpoint(path):
    """``progress.json`` of a checkpoint folder, format-checked."""
    progress = read_json(resolve_folder(path) / "progress.json")
    check_format(progress, "xal-experiment-checkpoint", _STATE_VERSION, str(path))
    return progress


def _split(dataset, test_set, cfg, seed):
    """Training indices and the test split ``(X, y, masks)`` of one seed."""
    if test_set is not None:  # the whole dataset is the pool
        return (np.arange(len(dataset["y"])),
                (test_set["X"], np.asarray(test_set["y"]), _masks(test_set, slice(None)),
                 _annotations(test_set, slice(None))))
    train, test = group_train_test_split(dataset["groups"], cfg["test_size"], random_state=seed)
    return train, (dataset["X"][test], np.asarray(dataset["y"])[test], _masks(dataset, test),
                   _annotations(dataset, test))


def _scores_logged(learner, n):
    """The queried samples' scores as the strategy computed them (NaN if it reports none)."""
    scores = getattr(learner, "query_scores_", None)
    out = {}
    for field in SCORE_FIELDS:
        values = (np.full(n, np.nan) if scores is None or field not in scores
                  else np.asarray(scores[field], dtype=np.float64))
        out[f"queried_{field}"] = json.dumps([None if np.isnan(v) else round(float(v), 6)
                                              for v in values])
    sources = None if scores is None else scores.get("roi_source")
    out["queried_roi_source"] = json.dumps([None] * n if sources is None else
                                           [str(v) for v in sources])
    return out


def _thread_lock_for_progress_bars():
    """In a worker process, tqdm's lock becomes a thread lock.

    tqdm's default lock holds a multiprocessing RLock, a named semaphore that a worker
    stopped by Ctrl-C or SIGTERM never releases, so Python ended every interrupted
    parallel run with "resource_tracker: There appear to be N leaked semaphore
    objects". A worker's bars are only ever written by its own threads.
    """
    import multiprocessing
    import threading

    from tqdm import tqdm

    if multiprocessing.parent_process() is not None:
        tqdm.set_lock(threading.RLock())


def _run_one(estimator, dataset, test_set, name, func, kwargs, params, seed, cfg, out_dir,
             threads, progress, roi_model=None):
    from tqdm.auto import tqdm

    _thread_lock_for_progress_bars()
    start = time.monotonic()
    torch.set_num_threads(threads)
    X, y = dataset["X"], np.asarray(dataset["y"])
    train, (X_test, y_test, masks_test, annotations_test) = _split(dataset, test_set, cfg, seed)
    rng = np.random.RandomState(seed)
    initial = np.sort(rng.choice(train, cfg["initial_size"], replace=False))
    pool_share = {"pool_without_roi": _without_roi(dataset, train) / len(train)}
    ckpt = _checkpoint_path(out_dir, name, seed) if out_dir is not None else None
    pool_rois = cfg.get("pool_rois", "given")
    # only the predicted setting has an ROI model; the seed seeds it as it seeds the network
    roi_template = None
    if pool_rois == "predicted":
        roi_template = (_set_random_state(clone(roi_model), seed)
                        if hasattr(roi_model, "get_params") else roi_model)
    learner = ActiveLearner(_strategy_estimator(estimator, params, seed), query_strategy=func,
                            random_state=seed, roi_model=roi_template)

    def evaluate():
        metrics, grid = _evaluate(learner, X_test, y_test, masks_test, cfg["n_classes"])
        return dict(metrics, **_roi_model_row(learner, X_test, annotations_test)), grid

    saved = None
    if ckpt is not None and resolve_folder(ckpt).exists():
        saved = read_checkpoint(ckpt)
        if saved.get("config_hash") != cfg["hash"]:
            raise ValueError(f"Checkpoint {ckpt} belongs to another configuration.")
    if saved is not None:  # resume after the last finished round
        labelled, rows = np.asarray(saved["labelled"], dtype=np.intp), saved["rows"]
        learner = ActiveLearner.load(resolve_folder(ckpt) / "learner",
                                     _strategy_estimator(estimator, params, seed), func,
                                     X_training=X[labelled], y_training=y[labelled],
                                     roi_training=_annotations(dataset, labelled),
                                     roi_model=roi_template)
        chance = {k: v for k, v in rows[0].items() if k.startswith("chance_")}
    else:
        labelled = initial
        learner.fit(X[labelled], y[labelled], _annotations(dataset, labelled))
        metrics, grid_shape = evaluate()
        chance = _chance_levels(masks_test, grid_shape, seed)  # once per run
        rows = [dict(strategy=name, seed=seed, round=0, n_labelled=len(labelled), **metrics,
                     **chance, queried="[]", **_scores_logged(None, 0),
                     queried_without_roi=0, **pool_share)]
    n_rounds = -(-(cfg["budget"] - cfg["initial_size"]) // cfg["query_size"])
    wants_masks = accepts_keyword(func, "roi_masks")
    lines = progress == "lines"  # one of several runs at once: lines, not bars
    bar = tqdm(total=n_rounds, initial=len(rows) - 1, desc=f"{name} seed {seed}",
               disable=True if lines else None if progress is None else not progress,
               leave=False)
    # without a terminal (a log file, a pipe, a batch job) bars are off: a line per round
    log = lines or (progress is None and bar.disable)
    resumed_at = len(rows) - 1 if saved is not None else None
    while True:
        if ckpt is not None:  # the learner and the rows of finished rounds, as one folder
            with atomic_folder(ckpt) as tmp:
                learner.save(tmp / "learner", include_data=False)
                (tmp / "progress.json").write_text(json.dumps({
                    "format": "xal-experiment-checkpoint", "version": _STATE_VERSION,
                    "config_hash": cfg["hash"], "labelled": labelled.tolist(),
                    "rows": rows}))
        bar.set_postfix(accuracy=f"{rows[-1]['accuracy']:.3f}")
        if log:
            _log_round(name, seed, rows[-1], n_rounds, time.monotonic() - start,
                       resumed=rows[-1]["round"] == resumed_at)
        if len(labelled) >= cfg["budget"]:
            break
        pool = np.setdiff1d(train, labelled)
        n_query = min(cfg["query_size"], cfg["budget"] - len(labelled))
        query_kwargs = dict(kwargs)
        if wants_masks and pool_rois == "given":  # the oracle: every pool image's expert ROI
            query_kwargs.setdefault("roi_masks", _masks(dataset, pool))
        # the strategy sees images (and, with "given", ROIs), never the pool's labels;
        # with "predicted" the learner's ROI model draws the ROIs, with "none" nobody does
        with warnings.catch_warnings():
            if pool_rois == "none":  # the fallback is the setting, said once in the report
                warnings.simplefilter("ignore", NoROIWarning)
            idx, _ = learner.query(X[pool], n_instances=n_query, **query_kwargs)
        chosen = pool[idx]
        logged = _scores_logged(learner, len(chosen))
        learner.teach(X[chosen], y[chosen], roi_masks=_annotations(dataset, chosen))
        labelled = np.concatenate([labelled, chosen])
        metrics, _ = evaluate()
        rows.append(dict(strategy=name, seed=seed, round=len(rows), n_labelled=len(labelled),
                         **metrics, **chance, queried=json.dumps(chosen.tolist()), **logged,
                         queried_without_roi=_without_roi(dataset, chosen), **pool_share))
        bar.update(1)
    bar.close()
    return rows


def _log_round(name, seed, row, n_rounds, elapsed, resumed=False):
    """One plain progress line, flushed at once so that a log file shows it."""
    what = "resumed after round" if resumed else "round"
    print(f"[xal {time.strftime('%H:%M:%S')}] {name}, seed {seed}: {what} {row['round']}/"
          f"{n_rounds}, {row['n_labelled']} labels, accuracy {row['accuracy']:.3f}, "
          f"{elapsed:.0f} s", file=sys.stdout, flush=True)


# --- the experiment -----------------------------------------------------------------

def _check_test_set(test_set, dataset, n_classes):
    if test_set is None:
        return None
    missing = [k for k in ("X", "y", "roi_masks", "roi_available") if k not in test_set]
    if missing:
        raise ValueError(f"test_set lacks {missing}; give a Bunch like the datasets' "
                         "(X, y, roi_masks, roi_available).")
    X_test = check_images(test_set["X"], name="test_set.X")
    shape, train_shape = X_test.shape[1:], np.shape(dataset["X"])[1:]
    if shape != tuple(train_shape):
        raise ValueError(f"test_set images have shape {shape} but the dataset's are "
                         f"{tuple(train_shape)}.")
    y_test = np.asarray(test_set["y"])
    if len(y_test) != len(X_test):
        raise ValueError(f"test_set has {len(X_test)} images but {len(y_test)} labels.")
    outside = sorted(set(y_test.tolist()) - set(range(n_classes)))
    if outside:
        raise ValueError(f"test_set labels {outside} are outside the training classes "
                         f"0..{n_classes - 1}.")
    masks = np.asarray(test_set["roi_masks"])
    if masks.shape != (len(X_test),) + tuple(shape[1:]):
        raise ValueError(f"test_set.roi_masks has shape {masks.shape}; expected "
                         f"{(len(X_test),) + tuple(shape[1:])}.")
    return dict(test_set, X=X_test, y=y_test)


def _prepare_out_dir(out_dir, cfg, force):
    """Create or reuse the results folder; return a function that undoes a fresh start."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out / out_dir {out_dir} is a file, not a folder.")
    config_file = out_dir / "config.json"
    fresh = not config_file.is_file()
    if not fresh:
        old = json.loads(config_file.read_text())
        if old.get("hash") != cfg["hash"]:
            if not force:
                raise ResultsFolderError(
                    f"{out_dir} holds results of a different configuration; use another "
                    "out_dir, or force=True to discard them and start over.", out_dir)
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
            shutil.rmtree(out_dir / "pretrain", ignore_errors=True)  # made by the old settings
            (out_dir / "results.csv").unlink(missing_ok=True)
            fresh = True
    created = [p for p in (out_dir, out_dir / "checkpoints") if not p.exists()]
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write(config_file, json.dumps(dict(cfg, versions=_versions()), indent=2))

    def undo_if_nothing_ran():
        # a start refused before any round finished leaves the folder as it found it
        if fresh and not any((out_dir / "checkpoints").iterdir()):
            config_file.unlink(missing_ok=True)
            for folder in reversed(created):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return undo_if_nothing_ran


def run_experiment(estimator, dataset, strategies, initial_size=90, query_size=60, budget=570,
                   seeds=(0, 1, 2), test_size=0.2, out_dir=None, n_jobs=None, force=False,
                   progress=None, extra_config=None, test_set=None, pretrain=None,
                   pool_rois="given", roi_model=None):
    """Simulate pool-based active learning and record learning curves.

    For each seed the data is split by ``groups`` (no subject in both train
    and test), and the same initial labelled set is drawn from the training
    part for every strategy, so curves differ only by the strategy. Each round
    fits on the labelled set, evaluates on the test split, queries
    ``query_size`` samples from the rest of the training split (the strategy
    sees images and ROIs, never the pool's labels) and reveals their labels
    (the oracle), until ``budget`` labels.

    Parameters
    ----------
    estimator : classifier
        Usually a :class:`~xal_sklearn.CNNClassifier`; cloned for every run,
        with ``random_state`` set to the seed.
    dataset : Bunch
        As returned by :mod:`xal_sklearn.datasets` (``X``, ``y``,
        ``roi_masks``, ``roi_available``, ``groups``, ``target_names``).
    strategies : dict
        ``name -> callable``, ``name -> (callable, kwargs)`` or ``name ->
        (callable, kwargs, estimator_params)`` with modAL's signature, e.g.
        ``{"random": random_sampling, "dual a=0.3": (dual_criterion_sampling,
        {"alpha": 0.3}), "dual a=0.3+roi": (dual_criterion_sampling, {"alpha":
        0.3}, {"roi_loss": "dice"})}``. Strategies that take ``roi_masks`` get
        the pool's masks; ``estimator_params`` are set on that strategy's copy
        of ``estimator`` (so one experiment compares training with and without
        an ROI loss, paired by seed).
    initial_size, query_size, budget : int
        Labels at the start, per round, and in total.
    seeds : sequence of int
    test_size : float
        Fraction of groups held out for testing (ignored with ``test_set``).
    out_dir : path-like, optional
        Results folder: ``config.json`` (configuration, package versions,
        seeds), ``checkpoints/`` (one file per strategy and seed, rewritten
        atomically after every round) and ``results.csv``. Running again with
        the same configuration resumes from the last finished round and gives
        the same results as an uninterrupted run; a folder of another
        configuration is refused unless ``force=True``, which starts over.
    n_jobs : int, optional
        (strategy, seed) runs in parallel through joblib; inside
        ``joblib.parallel_config(backend="dask")`` they go to a
        ``dask.distributed`` cluster. Each run uses ``cpu_count // n_jobs``
        torch threads, so workers do not oversubscribe the cores.
    force : bool, default=False
    progress : bool or None
        tqdm bars per run with the current accuracy. None: bars on a terminal
        when the runs go one at a time, and otherwise (several runs at once,
        whose bars would fight over one line, or output piped or sent to a log
        file) one line per finished round on standard output (strategy, seed,
        round, labels, accuracy, seconds since the run started). False: neither.
    extra_config : dict, optional
        Stored in ``config.json`` (the CLI records the data source there).
    test_set : Bunch, optional
        An explicit test split (``X``, ``y``, ``roi_masks``, ``roi_available``,
        labels among the dataset's classes). Then the whole ``dataset`` is the
        pool (no group split, ``groups`` not needed): train on one
        distribution, test on another, e.g. shortcut phantoms against
        marker-free ones.
    pretrain : dict, optional
        Keyword arguments of :func:`~xal_sklearn.pretrain_encoder` (``method``,
        ``epochs``, ...). Then, once per seed, the network is pretrained
        self-supervised on that seed's pool images only (the training split;
        never the test images, and no labels), with ``random_state`` the seed,
        on the estimator's ``device`` unless ``pretrain`` names one, and every
        round of every strategy of that seed starts from those weights
        (``init_weights``). With ``out_dir`` the weights are kept in
        ``pretrain/seed<S>.pt`` (written atomically; a resumed experiment reuses
        them after checking that they were made with these settings from this
        pool, else raises :class:`ResultsFolderError`; ``force=True`` discards
        them) and the settings in ``config.json``.
    pool_rois : {"given", "predicted", "none"}, default="given"
        Where the strategies' ROIs of the *unlabelled* pool come from. "given":
        the data set's expert masks of every pool image, as in a retrospective
        study (an oracle: in a real campaign nobody has drawn them). "predicted":
        an ROI model (``roi_model``) trained at every round on the ROIs of the
        labelled images only draws them. "none": strategies get no pool ROIs
        (the dual criterion then falls back as its ``missing_roi`` says). With
        "predicted" and "none" no strategy ever reads the ROI of an unlabelled
        image. In every setting the labelled images' ROIs train the ROI loss
        (and the ROI model), and the test split's only score attention and the
        ROI model (``roi_model_dice``, ``roi_model_roi_auc`` per round).
    roi_model : ROIPredictor or callable, optional
        The ROI model of ``pool_rois="predicted"`` (cloned per run, its
        ``random_state`` set to the seed); default ``ROIPredictor(warm_start=True)``:
        each round continues the last round's model.

    Returns
    -------
    pandas.DataFrame
        One row per strategy x seed x round: ``n_labelled``, the metrics in
        ``METRICS`` (accuracy, balanced accuracy, macro-F1, one-vs-rest ROC AUC,
        and ``attention_<metric>`` for every metric of
        :data:`~xal_sklearn.alignment.ALIGNMENT_METRICS`: the mean agreement of
        the predicted-class Grad-CAM with the ROI over test samples that have
        one), ``chance_<metric>`` (random maps on the same grid, once per run),
        ``n_predicted_classes`` and ``blank_map_fraction`` (flags of a
        degenerate model), and the queried dataset indices with the scores the
        strategy itself computed for them (``queried_uncertainty``,
        ``queried_alignment``, ``queried_misalignment``, ``queried_combined``;
        null where it computed none, e.g. random sampling);
        ``queried_without_roi`` (how many of the round's queried images have no
        expert ROI: a missing or empty mask, like a normal image's) and
        ``pool_without_roi`` (that share of the seed's pool), read from the data
        set for the report only; ``test_class_ratio`` (the test split's largest
        class over its smallest: the report puts balanced accuracy beside
        accuracy when it is 1.5 or more).

    Notes
    -----
    Every argument is checked before anything is written. Interrupting a run
    (Ctrl-C, SIGTERM, kill) never records the interrupted round: checkpoints
    are written only after a round's training, query and evaluation finished,
    so calling again resumes with results identical to an uninterrupted run.
    """
    strategies = _normalise_strategies(strategies)
    if pool_rois not in POOL_ROIS:
        raise ValueError(f"pool_rois must be one of {', '.join(POOL_ROIS)}; got {pool_rois!r}.")
    if roi_model is not None and pool_rois != "predicted":
        raise ValueError(f'roi_model is only used with pool_rois="predicted" (got '
                         f'{pool_rois!r}).')
    if pool_rois == "predicted":
        # each round continues the last round's ROI model: a third of the cost of
        # refitting, within 0.01-0.03 Dice of it (research/probe_roi_model.py --loop)
        roi_model = ROIPredictor(warm_start=True) if roi_model is None else roi_model
        if not (hasattr(roi_model, "fit") or callable(roi_model)):
            raise TypeError(f"roi_model must be an ROIPredictor or a callable f(X) -> masks; "
                            f"got {roi_model!r}.")
    for name, (_, _, params) in strategies.items():
        try:  # a wrong parameter name is refused now, not in the middle of the runs
            clone(estimator).set_params(**params)
        except ValueError as exc:
            raise ValueError(f"Estimator parameters of strategy {name!r}: {exc}") from None
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, got {seeds!r}.")
    needed = ("X", "y", "roi_masks", "roi_available") + (("groups",) if test_set is None else ())
    for key in needed:
        if key not in dataset:
            raise ValueError(f"dataset lacks {key!r}; use a loader from xal_sklearn.datasets.")
    check_images(dataset["X"][:1], name="dataset.X")
    y = np.asarray(dataset["y"])
    n_classes = len(dataset.get("target_names", np.unique(y)))
    if n_classes < 2 or len(np.unique(y)) < 2:
        raise ValueError(f"The dataset has {len(np.unique(y))} class(es) in y and "
                         f"{n_classes} class name(s); active learning of a classifier needs "
                         "at least 2.")
    test_set = _check_test_set(test_set, dataset, n_classes)
    _warn_rare_classes(dataset, y, n_classes, None if test_set is not None else test_size)
    pretrain = _check_pretrain(pretrain, estimator)
    if test_set is None and not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}.")
    for seed in seeds:
        train = (np.arange(len(y)) if test_set is not None else
                 group_train_test_split(dataset["groups"], test_size, random_state=seed)[0])
        _check_sizes(initial_size, query_size, budget, len(train))
        if pretrain is not None and len(train) < pretrain.get("batch_size", 256):
            raise ValueError(f"The pool of seed {seed} has {len(train)} images, fewer than one "
                             f"pretraining batch of {pretrain.get('batch_size', 256)}; pass a "
                             "smaller batch_size in pretrain.")
        missing = sorted(set(range(n_classes)) - set(y[train].tolist()))
        if missing:
            names = [str(v) for v in
                     np.asarray(dataset.get("target_names", np.arange(n_classes)))[missing]]
            raise ValueError(f"Class(es) {names} are absent from the training split of "
                             f"seed {seed}; the learner could never learn them.")

    cfg = {
        "estimator": type(estimator).__name__,
        "template": _template(estimator),
        "estimator_params": {k: _stable_repr(v) for k, v in
                             sorted(estimator.get_params(deep=False).items())
                             if k != "random_state" and not k.endswith("__random_state")
                             and not (k in _RECORDED_WHEN_SET and v is None)},
        "dataset": {"n_samples": len(y), "image_shape": list(np.shape(dataset["X"])[1:]),
                    "n_classes": n_classes, "fingerprint": _fingerprint(dataset),
                    "target_names": [str(t) for t in dataset.get("target_names", [])]},
        "strategies": {n: dict({"function": _qualname(f),
                                "kwargs": {k: _jsonable(v) for k, v in kw.items()}},
                               **({"estimator_params": {k: _jsonable(v) for k, v in p.items()}}
                                  if p else {}))
                       for n, (f, kw, p) in strategies.items()},
        "initial_size": int(initial_size), "query_size": int(query_size), "budget": int(budget),
        "seeds": seeds, "test_size": float(test_size), "n_classes": n_classes,
        "test_set": None if test_set is None else {
            "n_samples": len(test_set["y"]),
            "fingerprint": _fingerprint(dict(test_set, groups=np.zeros(len(test_set["y"]))))},
        "extra": extra_config or {},
    }
    if pretrain is not None:  # only then: older folders keep their configuration hash
        cfg["pretrain"] = {k: _jsonable(v) for k, v in sorted(pretrain.items())}
    if pool_rois != "given":  # likewise: every folder before this setting was "given"
        cfg["pool_rois"] = pool_rois
        if roi_model is not None:
            cfg["roi_model"] = _stable_repr(roi_model)
    cfg["hash"] = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    cfg.setdefault("pool_rois", pool_rois)  # named in config.json in every setting

    runs = [(name, seed) for seed in seeds for name in strategies]
    n_parallel = max(1, min(effective_n_jobs(n_jobs), len(runs)))
    threads = max(1, (os.cpu_count() or 1) // n_parallel)
    undo = lambda: None  # noqa: E731
    if out_dir is not None:
        out_dir = Path(out_dir)
        undo = _prepare_out_dir(out_dir, cfg, force)
    try:
        warm = {} if pretrain is None else {
            seed: _pretrained(estimator, dataset, test_set, cfg, seed, pretrain, out_dir,
                              progress) for seed in seeds}

        def params_of(name, seed):
            func, kwargs, params = strategies[name]
            return func, kwargs, (dict(params, init_weights=warm[seed]) if warm else params)

        # one run goes in this process (no worker to start); several runs print lines
        run_progress = "lines" if progress is None and n_parallel > 1 else progress
        with quiet_worker_restarts():
            results = Parallel(n_jobs=n_parallel)(
                delayed(_run_one)(estimator, dataset, test_set, name, *params_of(name, seed),
                                  seed, cfg, out_dir, threads, run_progress, roi_model)
                for name, seed in runs)
    except BaseException:
        undo()
        raise
    table = pd.DataFrame([row for rows in results for row in rows])
    if out_dir is not None:
        atomic_write(out_dir / "results.csv", table.to_csv(index=False))
    return table


@contextmanager
def quiet_worker_restarts():
    """Silence loky's warning that a worker stopped while jobs were queued.

    A loky worker whose memory grew by more than 300 MB since its first job (one fit's
    tensors and the torch allocator's cache do) exits after sending its result back, and
    loky starts another for the queued jobs; no job is lost, but the warning blames "a
    memory leak" and is the only one a long run on real data prints. Every other warning
    passes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                category=UserWarning)
        yield


def _check_pretrain(pretrain, estimator):
    """``pretrain`` kwargs checked against pretrain_encoder before anything runs."""
    if pretrain is None:
        return None
    from ..pretrain import PRETRAIN_METHODS, pretrain_encoder

    if not isinstance(pretrain, dict):
        raise TypeError(f"pretrain must be a dict of pretrain_encoder arguments, got {pretrain!r}.")
    allowed = set(inspect.signature(pretrain_encoder).parameters) - {"X", "module",
                                                                      "random_state", "progress"}
    unknown = sorted(set(pretrain) - allowed)
    if unknown:
        raise ValueError(f"pretrain has argument(s) {unknown} that pretrain_encoder does not "
                         f"take here; allowed: {sorted(allowed)}.")
    if pretrain.get("method", "simclr") not in PRETRAIN_METHODS:
        raise ValueError(f"Unknown pretraining method {pretrain['method']!r}; choose one of "
                         f"{', '.join(PRETRAIN_METHODS)}.")
    if "init_weights" not in estimator.get_params():
        raise TypeError(f"pretrain needs an estimator with init_weights (CNNClassifier); "
                        f"{type(estimator).__name__} has none.")
    return dict(pretrain)


def _pretrained(estimator, dataset, test_set, cfg, seed, pretrain, out_dir, progress):
    """The seed's warm start: pretrained on its pool images only, kept in the results folder."""
    from ..pretrain import pretrain_encoder

    path = None if out_dir is None else Path(out_dir) / "pretrain" / f"seed{seed}.pt"
    pool, _ = _split(dataset, test_set, cfg, seed)
    if path is not None and path.is_file():  # resumed: the same weights as before
        _check_kept_weights(path, pretrain, len(pool), dataset["X"].shape[1:], out_dir)
        return str(path)
    start = time.monotonic()
    # where the estimator trains (so "--device cpu" keeps a GPU machine's GPU free)
    where = {"device": estimator.device} if hasattr(estimator, "device") else {}
    weights = pretrain_encoder(dataset["X"][pool], module=estimator, random_state=seed,
                               progress=progress, **{**where, **pretrain})
    if progress is None and not sys.stdout.isatty():
        print(f"[xal {time.strftime('%H:%M:%S')}] pretrained seed {seed} "
              f"({weights.info['method']}, {weights.info['epochs']} epochs on {len(pool)} pool "
              f"images) in {time.monotonic() - start:.0f} s", flush=True)
    if path is None:
        return weights
    path.parent.mkdir(parents=True, exist_ok=True)
    weights.save(path)
    return str(path)


#: What a kept warm start records (EncoderWeights.info) that ``pretrain`` may set.
_PRETRAIN_RECORDED = ("method", "epochs", "batch_size", "lr", "flips", "crop_scale")


def _check_kept_weights(path, pretrain, n_images, image_shape, out_dir):
    """Refuse a kept ``pretrain/seed<S>.pt`` that other settings or another pool made.

    A resumed experiment reuses its weights; a file left by other settings (a folder
    reused by hand, an older run) would otherwise warm-start every fit unnoticed.
    """
    from ..pretrain import EncoderWeights, pretrain_encoder

    info = EncoderWeights.load(path).info
    defaults = {k: p.default for k, p in inspect.signature(pretrain_encoder).parameters.items()}
    want = {k: pretrain.get(k, defaults[k]) for k in _PRETRAIN_RECORDED}
    want.update(n_images=int(n_images), image_shape=[int(d) for d in image_shape])
    if want["method"] == "simclr":
        want["temperature"] = pretrain.get("temperature", defaults["temperature"])
    else:
        want["ema"] = pretrain.get("ema", defaults["ema"])

    def plain(v):  # as info holds it: JSON's lists, not tuples
        return [plain(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else v
    differ = [f"{k} {info.get(k)!r} (this run: {plain(v)!r})" for k, v in want.items()
              if plain(info.get(k)) != plain(v)]
    if differ:
        raise ResultsFolderError(
            f"{path} holds a warm start made with other settings or another pool: "
            f"{', '.join(differ)}. Delete {path.parent} to pretrain again, or use another "
            "out_dir.", out_dir, detail=f"{path} was pretrained with {', '.join(differ)}")


def load_results(out_dir):
    """The results table of a results folder (from ``results.csv``, else checkpoints)."""
    out_dir = Path(out_dir)
    if (out_dir / "results.csv").is_file():
        return pd.read_csv(out_dir / "results.csv")
    rows = []
    for ckpt in sorted(p for p in (out_dir / "checkpoints").glob("*__seed*")
                       if not p.name.startswith(".")):
        rows.extend(read_checkpoint(ckpt)["rows"])
    if not rows:
        raise FileNotFoundError(f"{out_dir} holds no results.")
    return pd.DataFrame(rows)
