"""Per-sample acquisition scores of a pool: uncertainty, alignment, combined."""

import numbers
from contextlib import nullcontext

import numpy as np
from scipy.stats import rankdata
from sklearn.utils import Bunch

from ._pool import iter_pool, pool_length, progress_bar, reads_ahead
from ._validation import check_alpha, resolve_estimator
from .alignment import alignment_t, check_alignment_name
from .embedding import EmbeddingCapture, gradient_embeddings
from .gradcam import GradCAMEngine
from .uncertainty import _uncertainty_t, check_uncertainty_name

__all__ = ["score_pool", "raw_scores", "MISSING_ROI_POLICIES"]

MISSING_ROI_POLICIES = ("typical", "matched", "uncertainty", "exclude")


def _check_missing_roi(missing_roi):
    if isinstance(missing_roi, numbers.Real) and not isinstance(missing_roi, bool):
        if 0 <= missing_roi <= 1:
            return float(missing_roi)
    elif missing_roi in MISSING_ROI_POLICIES:
        return missing_roi
    raise ValueError(
        f"missing_roi must be one of {MISSING_ROI_POLICIES} or a misalignment value in "
        f"[0, 1]; got {missing_roi!r}."
    )


def score_pool(classifier, X_pool, roi_masks=None, *, alpha=0.3, uncertainty="entropy",
               alignment="soft_dice", threshold=0.5, tolerance=0, missing_roi="typical",
               layer=None, embeddings=False,
               batch_size=None, return_maps=False, num_workers=0, read_ahead=None,
               progress=None, client=None):
    """Score every pool sample for explainability-guided active learning.

    One pass over the pool, batch by batch: a single forward pass gives the
    class probabilities and (through Captum's ``LayerGradCam``, backpropagating
    only to the Grad-CAM layer) the attention map of the predicted class, which
    is compared with the sample's ROI. Each batch is reduced to its scores, so
    memory does not grow with the pool unless ``return_maps=True``.

    ``combined = alpha * uncertainty + (1 - alpha) * (1 - alignment)``

    Parameters
    ----------
    classifier : fitted CNNClassifier, Pipeline ending in one, our or modAL's ActiveLearner
    X_pool : array-like (N, C, H, W) / (N, C, D, H, W), numpy memmap, or torch Dataset
        A Dataset may return ``image`` or ``(image, mask)`` per item; a
        Pipeline's preceding steps are applied to each batch.
    roi_masks : None, array-like (N, H, W) or (N, D, H, W), memmap, Dataset, or list with None entries
        Regions of interest (bool, 0/1 or 0/255). A missing (None) or empty
        mask means "no ROI": its alignment is NaN and ``missing_roi`` applies.
    alpha : float in [0, 1], default=0.3
        Weight of uncertainty; 1 is pure uncertainty sampling, 0 pure
        misalignment.
    uncertainty : {"entropy", "margin", "least_confident"}, default="entropy"
        Normalised to [0, 1]; see :mod:`xal_sklearn.uncertainty`.
    alignment : str, default="soft_dice"
        How the Grad-CAM map is compared with the ROI: a key of
        :data:`xal_sklearn.alignment.ALIGNMENT_METRICS` ("soft_dice", "dice",
        "iou", "pointing_game", "roi_auc", "mass_in_roi"; see
        :mod:`xal_sklearn.alignment` for each one's chance level).
        ``threshold`` binarises the map for "dice" and "iou"; ``tolerance``
        (pixels) grows the mask for "pointing_game".
    missing_roi : "typical", "matched", "uncertainty", "exclude" or float in [0, 1], \
default="typical"
        Policy for samples without an ROI (none given, an empty mask such as a
        normal image's, or none predicted), whose alignment cannot be judged:
        "typical" gives them the median misalignment of the pool samples that
        have one, so ``combined`` weighs uncertainty by ``alpha`` for every
        sample and the two kinds compete on the same scale (without any ROI in
        the pool, the ranking is by uncertainty); "matched" ranks them among
        themselves by uncertainty and gives the one at quantile q the q-quantile
        of the ``combined`` scores of the samples with an ROI, so both kinds have
        the same distribution of scores and fill a batch in proportion to their
        share of the pool; "uncertainty" scores them by
        uncertainty alone, which ranks them above nearly every sample with an ROI
        once ``alpha`` is small (on breast ultrasound the normal images, whose
        masks are empty, filled most batches); "exclude" ranks them after every
        sample with an ROI (among themselves by uncertainty); a float is used as
        their misalignment.
    layer : str or nn.Module, optional
        Grad-CAM layer; default the estimator's ``gradcam_layer`` or its last
        convolution.
    batch_size : int, optional
        Default: the estimator's ``batch_size``.
    embeddings : bool or "gradient", default=False
        Also return the penultimate features (the input of the network's last
        linear layer), captured in the same forward pass; ``"gradient"`` adds
        BADGE's gradient embeddings, computed from the features and the
        probabilities without another backward pass (see
        :mod:`xal_sklearn.embedding`). The network needs a linear head.
    return_maps : bool, default=False
        Also return the Grad-CAM maps (N, H, W) or (N, D, H, W) -- only for small pools.
    num_workers : int, default=0
        DataLoader workers reading the pool.
    read_ahead : bool or None, default=None
        With ``num_workers=0``, a thread reads (and a campaign's file pool decodes)
        the next batches while the network scores the current one, so whichever is
        slower sets the pace. None: when the network runs on an accelerator. On
        the CPU the network already uses every core, and reading beside it was
        slower for files and no faster for arrays (docs/benchmarks.md).
    progress : bool or None, default=None
        tqdm progress bar (None: only on a terminal).
    client : dask.distributed.Client or str, optional
        Score on a Dask cluster (a client, or a scheduler's address): the pool is
        split into shards of whole batches, the network is sent once to every
        worker, and each shard is scored on a worker (see
        :mod:`xal_sklearn.scoring_dask`, which also has a context manager that
        sends every scoring of a block there). The same Bunch as a local call.
        Needs the ``dask`` extra.

    Returns
    -------
    Bunch with, per pool sample:
        ``proba`` (N, n_classes), ``y_pred`` (N,) predicted labels,
        ``uncertainty`` (N,) in [0, 1], ``alignment`` (N,) in [0, 1] or NaN
        without ROI, ``misalignment`` (N,) = 1 - alignment (NaN without ROI),
        ``roi_available`` (N,) bool, ``combined`` (N,) the acquisition score
        (higher is queried first), ``blank_map`` (N,) bool (the Grad-CAM map
        is zero everywhere: the explained class has no positive evidence at
        that layer), ``grid_shape`` the spatial shape of the explained layer's
        output, ``maps`` if requested, ``embeddings`` (N, D) and
        ``gradient_embeddings`` (N, C * D) if requested.
    """
    if embeddings not in (False, True, "gradient"):
        raise ValueError(f'embeddings must be False, True or "gradient"; got {embeddings!r}.')
    alpha = check_alpha(alpha)
    check_uncertainty_name(uncertainty)
    check_alignment_name(alignment)
    missing_roi = _check_missing_roi(missing_roi)
    net, _ = resolve_estimator(classifier)
    batch_size = int(batch_size or net.batch_size)
    settings = dict(uncertainty=uncertainty, alignment=alignment, threshold=threshold,
                    tolerance=tolerance, layer=layer, embeddings=embeddings,
                    batch_size=batch_size, return_maps=return_maps, num_workers=num_workers,
                    read_ahead=read_ahead)
    from .scoring_dask import current_client

    client = client if client is not None else current_client()
    if client is not None:
        from .scoring_dask import raw_scores_on_cluster

        res = raw_scores_on_cluster(client, classifier, X_pool, roi_masks, settings, progress)
    else:
        res = raw_scores(classifier, X_pool, roi_masks, progress=progress, **settings)
    return _finish(res, net, alpha, missing_roi, embeddings)


def raw_scores(classifier, X_pool, roi_masks=None, *, uncertainty="entropy",
               alignment="soft_dice", threshold=0.5, tolerance=0, layer=None,
               embeddings=False, batch_size=None, return_maps=False, num_workers=0,
               read_ahead=None, progress=None):
    """The per-sample part of :func:`score_pool` (what does not depend on the rest of
    the pool): ``proba``, ``uncertainty``, ``alignment``, ``roi_available``,
    ``blank_map``, ``grid_shape`` and, if asked, ``maps`` and ``embeddings``. Shards of
    a pool scored apart and concatenated give the whole pool's."""
    net, preprocess = resolve_estimator(classifier)
    n = pool_length(X_pool)
    batch_size = int(batch_size or net.batch_size)
    nonlinearity = net._get_predict_nonlinearity()

    # Results go into arrays allocated up front: nothing allocated per batch outlives
    # it, so the heap does not fragment and memory stays flat however large the pool.
    res = Bunch(proba=np.empty((n, len(net.classes_)), dtype=np.float32),
                uncertainty=np.empty(n), alignment=np.empty(n),
                roi_available=np.empty(n, dtype=bool), blank_map=np.empty(n, dtype=bool))
    capture = EmbeddingCapture(net.module_) if embeddings else nullcontext()
    with GradCAMEngine(net, layer) as engine, capture:
        batches = iter_pool(X_pool, roi_masks, batch_size, preprocess, num_workers,
                            read_ahead=reads_ahead(net, read_ahead))
        for x, masks, available, start in progress_bar(batches, progress, -(-n // batch_size),
                                                        "Scoring pool"):
            logits, cams = engine(x)
            proba = nonlinearity(logits)
            rows = slice(start, start + len(x))
            if embeddings:
                feats = capture.take(logits)
                if "embeddings" not in res:
                    res.embeddings = np.empty((n, feats.shape[1]), dtype=np.float32)
                res.embeddings[rows] = feats.cpu().numpy()
            res.proba[rows] = proba.cpu().numpy()
            res.uncertainty[rows] = _uncertainty_t(proba.double(), uncertainty).cpu().numpy()
            masks = masks.to(cams.device, non_blocking=True)
            res.alignment[rows] = alignment_t(alignment, cams.double(), masks, threshold,
                                              tolerance).cpu().numpy()
            res.roi_available[rows] = available.numpy()
            res.blank_map[rows] = (cams.reshape(len(cams), -1).amax(1) <= 0).cpu().numpy()
            if return_maps:
                if "maps" not in res:
                    res.maps = np.empty((n,) + tuple(cams.shape[1:]), dtype=np.float32)
                res.maps[rows] = cams.cpu().numpy()

    res.grid_shape = engine.grid_shape
    return res


def _finish(res, net, alpha, missing_roi, embeddings):
    """The pool-level part of :func:`score_pool`: predictions, misalignment and the
    combined score (which, for samples without an ROI, reads the rest of the pool)."""
    if embeddings == "gradient":
        res.gradient_embeddings = gradient_embeddings(res.proba, res.embeddings)
    res.roi_available &= ~np.isnan(res.alignment)
    res.y_pred = net.classes_[res.proba.argmax(axis=1)]
    res.misalignment = 1.0 - res.alignment
    u, mis, has_roi = res.uncertainty, res.misalignment, res.roi_available
    combined = alpha * u + (1 - alpha) * np.where(has_roi, mis, 0.0)
    if missing_roi == "typical":
        typical = float(np.median(mis[has_roi])) if has_roi.any() else 0.0
        combined = np.where(has_roi, combined, alpha * u + (1 - alpha) * typical)
    elif missing_roi == "matched":
        combined = np.where(has_roi, combined, u)  # the ranking without any ROI
        if has_roi.any() and not has_roi.all():
            q = (rankdata(u[~has_roi]) - 0.5) / (~has_roi).sum()
            combined[~has_roi] = np.quantile(combined[has_roi], q)
    elif missing_roi == "uncertainty":
        combined = np.where(has_roi, combined, u)
    elif missing_roi == "exclude":
        combined = np.where(has_roi, combined, u - 2.0)
    else:
        combined = np.where(has_roi, combined, alpha * u + (1 - alpha) * missing_roi)
    res.combined = combined
    return res
