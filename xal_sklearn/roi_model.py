"""Where is the region of interest? A small segmentation model trained on the experts' ROIs.

Explanation-guided selection compares each *unlabelled* image's Grad-CAM with that
image's ROI. Outside retrospective studies nobody has drawn those: the experts draw
ROIs only on the images they label. :class:`ROIPredictor` learns from those and
draws the ROI of any other image, so that :func:`~xal_sklearn.dual_criterion_sampling`
can run on a pool without annotations (``ActiveLearner(roi_model=ROIPredictor())``).

The network is a separate small one rather than a decoder on the classifier's
features: it works beside any classifier (a torchvision backbone, a Pipeline,
modAL's learner), its quality does not move with the classifier's training (which
the ROI loss and the cross-entropy pull in other directions), and its cost is fixed
and small. Its first two blocks have the layout of :class:`~xal_sklearn.SmallCNN`'s,
so a warm start from :func:`~xal_sklearn.pretrain_encoder` loads into them.
"""

import copy
import json
import numbers
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch, check_random_state
from torch import nn

from ._pool import as_batch_tensor, iter_pool, pool_length
from ._persist import atomic_path
from ._validation import (check_device, check_images, check_roi_masks, resolve_device,
                          roi_annotated)
from .alignment import dice, roi_auc
from .modules import to_channels_last

__all__ = ["ROIPredictor", "ROIModelError", "ROINet", "check_roi_callable_output",
           "predict_pool_rois", "roi_model_quality"]

_FORMAT, _VERSION = "xal-roi-model", 1


class ROIModelError(ValueError):
    """A saved ROI model, or an ROI callable's output, does not fit the images given."""


class ROINet(nn.Module):
    """Two SmallCNN blocks (each ``Conv -> BatchNorm -> MaxPool -> ReLU``), then dilated
    convolutions for context and a 1x1 convolution: one ROI logit per cell of a grid a
    quarter of the input's side (the resolution of the classifier's Grad-CAM).

    The receptive field of a cell is about 40 pixels, enough to see a lesion and its
    surroundings at 64-128 px. ``features.*`` are named as in SmallCNN, so pretrained
    encoder weights of those blocks load (see :meth:`load_encoder`).
    """

    def __init__(self, in_channels=1, n_filters=(16, 32)):
        super().__init__()
        a, b = n_filters
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, a, 3, padding=1, bias=False), nn.BatchNorm2d(a),
            nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b),
            nn.MaxPool2d(2), nn.ReLU())
        self.context = nn.Sequential(
            nn.Conv2d(b, b, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(b), nn.ReLU(),
            nn.Conv2d(b, b, 3, padding=4, dilation=4, bias=False), nn.BatchNorm2d(b), nn.ReLU())
        self.head = nn.Conv2d(b, 1, 1)

    def forward(self, x):
        return self.head(self.context(self.features(x)))[:, 0]

    def load_encoder(self, weights):
        """Copy the ``features.*`` tensors of :class:`~xal_sklearn.EncoderWeights` that
        fit (SmallCNN's first two blocks); return how many were copied."""
        own = self.state_dict()
        taken = {k: v for k, v in weights.state.items()
                 if k in own and own[k].shape == v.shape}
        if not taken:
            raise ROIModelError(
                f"init_weights ({weights.info.get('source', 'EncoderWeights')}) share no tensor "
                "with the ROI model's first two blocks; pretrain a SmallCNN with the same "
                "number of image channels and n_filters.")
        self.load_state_dict(taken, strict=False)
        return len(taken)


def _check_threshold(threshold):
    if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
            or not 0 < threshold < 1):
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}.")
    return float(threshold)


class ROIPredictor(BaseEstimator):
    """Learns where the ROI is from labelled images and draws it for any other image.

    A scikit-learn estimator around :class:`ROINet`, trained with a per-pixel binary
    cross-entropy plus a soft Dice term on a grid a quarter of the image's side,
    and read out at the image's own resolution (bilinear).

    Parameters
    ----------
    threshold : float in (0, 1), default=0.4
        :meth:`predict` marks the pixels whose probability reaches it. A pool image
        none of whose pixels reaches it has no predicted ROI ("too uncertain"): its
        alignment cannot be judged and the strategy's ``missing_roi`` applies. On
        validation groups (research/probe_roi_model.py) brain MRI's small tumours
        drew best at 0.3 and breast ultrasound's larger lesions at 0.5; 0.4 came
        within 0.05 Dice of the best on both at every labelled-set size tried.
    max_epochs : int, default=30
    max_steps : int or None, default=300
        A cap on optimizer steps, so the cost stops growing with the labelled set:
        30 epochs of 90 images are 90 steps; of 570 images, 300 steps (about 17
        epochs, which scored within 0.02 Dice of 30 on validation groups, at half
        the time).
    warm_start : bool, default=False
        As in scikit-learn: ``fit`` on a fitted model continues from its weights,
        for ``warm_epochs`` passes over the images given (at most ``max_steps``
        steps). :class:`~xal_sklearn.ActiveLearner` then refits each round's model
        from the last round's instead of from scratch, so its cost per round is a
        quarter of the classifier's 20 epochs while its steps add up over the
        rounds (the experiments and campaigns use it). On validation groups of
        brain MRI, 5 epochs a round came within 0.02-0.06 Dice of refitting from
        scratch (0.360 against 0.380 at 570 labels, pixel roi_auc 0.950 against
        0.946) at 1.7-6.4 s a round instead of 10-37 s; 2 epochs fell 0.1 behind.
    warm_epochs : int, default=5
        Epochs of a fit that continues (``warm_start``).
    batch_size : int, default=32
    lr : float, default=3e-3
        Adam's learning rate (cosine-annealed to 0).
    n_filters : tuple of 2 int, default=(16, 32)
        Channels of the two blocks (SmallCNN's first two by default, so its
        pretrained weights fit).
    dice_weight : float, default=1.0
        Weight of the soft Dice term beside the cross-entropy: the cross-entropy
        alone favours the background on small lesions.
    flip : bool, default=True
        Random horizontal flips while training (left and right carry no meaning
        in the slices and scans this targets).
    init_weights : path-like or EncoderWeights, optional
        A warm start for the first two blocks (see :func:`~xal_sklearn.pretrain_encoder`).
    device : {"cpu", "cuda", "auto"}, default="cpu"
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and flips: same seed, same model.

    Attributes
    ----------
    module_ : ROINet
    image_shape_ : tuple
        ``(C, H, W)`` of the training images; other shapes are refused.
    n_train_ : int
        Images trained on (those with an annotation; annotated-empty ones included).
    n_empty_ : int
        Of them, annotated without a lesion.
    n_fits_ : int
        Fits this model's weights went through (more than 1 only with ``warm_start``).
    """

    def __init__(self, threshold=0.4, max_epochs=30, max_steps=300, batch_size=32, lr=3e-3,
                 n_filters=(16, 32), dice_weight=1.0, flip=True, init_weights=None,
                 warm_start=False, warm_epochs=5, device="cpu", random_state=None):
        self.threshold = threshold
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.n_filters = n_filters
        self.dice_weight = dice_weight
        self.flip = flip
        self.init_weights = init_weights
        self.warm_start = warm_start
        self.warm_epochs = warm_epochs
        self.device = device
        self.random_state = random_state

    # --- training ---------------------------------------------------------------------
    def check_params(self):
        """Raise ``ValueError`` naming the first parameter that is out of range (``fit``
        calls it; so may a caller that records the parameters before fitting)."""
        _check_threshold(self.threshold)
        for name in ("max_epochs", "batch_size", "warm_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(
                self.max_steps, numbers.Integral) or self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer or None, got "
                             f"{self.max_steps!r}.")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")
        if len(tuple(self.n_filters)) != 2:
            raise ValueError(f"n_filters must name 2 blocks, got {self.n_filters!r}.")
        check_device(self.device)

    def fit(self, X, roi_masks):
        """Train on the images that carry an annotation.

        Parameters
        ----------
        X : array-like (n, C, H, W)
        roi_masks : array-like (n, H, W), or a list with ``None`` entries
            An array annotates every image (an empty mask: annotated, no lesion);
            a ``None`` entry leaves its image out (nobody drew on it). Boxes turn
            into masks with :func:`~xal_sklearn.datasets.boxes_to_masks` first.

        Raises
        ------
        ValueError
            When no image carries an annotation, or the shapes disagree.
        """
        self.check_params()
        X = check_images(X)
        if X.ndim != 4:
            raise ValueError("ROIPredictor takes 2-D images (n, C, H, W); got shape "
                             f"{X.shape}.")
        annotated = roi_annotated(roi_masks, len(X))
        masks, _ = check_roi_masks(roi_masks, len(X), X.shape[2:])
        if not annotated.any():
            raise ValueError("No image carries an ROI annotation (every roi_masks entry is "
                             "None): the ROI model has nothing to learn from.")
        X, masks = X[annotated], masks[annotated]
        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        warm = self.warm_start and hasattr(self, "module_")
        epochs = self.warm_epochs if warm else self.max_epochs
        steps = epochs * -(-len(X) // self.batch_size)
        if self.max_steps is not None:
            steps = min(steps, self.max_steps)
        if warm:  # continue from (a copy of) the fitted weights: an interrupted fit
            self._check_shape(X.shape[1:])  # leaves the model as it was
            module = copy.deepcopy(self.module_)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = ROINet(X.shape[1], tuple(self.n_filters))
            if self.init_weights is not None:
                from .pretrain import as_encoder_weights

                module.load_encoder(as_encoder_weights(self.init_weights))
        module.to(device).train()
        channels_last = device == "cpu"
        if channels_last:  # measured 1.8x faster on the CPU (research/roi_model.md)
            to_channels_last(module)
        grid = _grid(X.shape[2:])
        # targets on the output grid: the share of each cell inside the ROI (soft)
        target = F.adaptive_avg_pool2d(torch.from_numpy(masks[:, None].astype(np.float32)),
                                       grid)[:, 0]
        x_all = torch.from_numpy(X)
        opt = torch.optim.Adam(module.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
        gen = torch.Generator().manual_seed(seed)
        done = 0
        while done < steps:
            order = torch.randperm(len(X), generator=gen)
            for start in range(0, len(X), self.batch_size):
                if done >= steps:
                    break
                idx = order[start:start + self.batch_size]
                xb, tb = x_all[idx], target[idx]
                if self.flip:
                    flipped = torch.rand(len(idx), generator=gen) < 0.5
                    xb = torch.where(flipped[:, None, None, None], xb.flip(-1), xb)
                    tb = torch.where(flipped[:, None, None], tb.flip(-1), tb)
                xb, tb = xb.to(device), tb.to(device)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                loss = _loss(module(xb), tb, self.dice_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                done += 1
        self.module_ = module.eval()
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_train_ = int(len(X))
        self.n_fits_ = getattr(self, "n_fits_", 0) + 1 if self.warm_start else 1
        self.n_empty_ = int((~masks.reshape(len(masks), -1).any(1)).sum())
        return self

    # --- prediction -------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "module_"):
            raise NotFittedError("This ROIPredictor is not fitted yet; call fit(X, roi_masks) "
                                 "with images that carry ROIs.")

    def _check_shape(self, shape):
        if tuple(shape) != self.image_shape_:
            raise ROIModelError(
                f"The ROI model was fitted on images of shape {self.image_shape_} (channels, "
                f"height, width); got {tuple(shape)}. Resize the images as for training.")

    @torch.no_grad()
    def predict_proba(self, X, batch_size=None):
        """Per-pixel probability of lying in the ROI, ``(n, H, W)`` float32 in [0, 1].

        ``X`` may be an array, a memmap or a torch ``Dataset`` (streamed batch by batch).
        """
        self._check_fitted()
        out = None
        device = next(self.module_.parameters()).device
        for x, _, _, start in iter_pool(X, None, int(batch_size or 4 * self.batch_size)):
            self._check_shape(x.shape[1:])
            x = x.to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            p = torch.sigmoid(self.module_(x))
            p = F.interpolate(p[:, None], size=tuple(x.shape[2:]), mode="bilinear",
                              align_corners=False)[:, 0].clamp_(0, 1)
            if out is None:
                out = np.empty((pool_length(X),) + tuple(x.shape[2:]), np.float32)
            out[start:start + len(x)] = p.cpu().numpy()
        return out

    def predict(self, X, batch_size=None):
        """ROI masks: ``predict_proba(X) >= threshold``, ``(n, H, W)`` bool."""
        return self.predict_proba(X, batch_size) >= _check_threshold(self.threshold)

    def score(self, X, roi_masks):
        """Mean Dice of :meth:`predict` against ``roi_masks`` over images with a lesion."""
        return roi_model_quality(self, X, roi_masks).dice

    # --- saving without pickle ----------------------------------------------------------
    def json_params(self):
        """The parameters as JSON-ready values (``init_weights`` as its path)."""
        params = self.get_params()
        params["init_weights"] = (None if params["init_weights"] is None
                                  else str(getattr(params["init_weights"], "info", {})
                                           .get("source", params["init_weights"])))
        params["random_state"] = (params["random_state"]
                                  if isinstance(params["random_state"], (int, type(None)))
                                  else None)
        params["n_filters"] = list(params["n_filters"])
        return params

    def save(self, path):
        """Write the fitted model to ``path`` (one torch file of tensors, strings and
        numbers, atomically; read back with ``weights_only=True``)."""
        self._check_fitted()
        meta = {"params": self.json_params(), "image_shape": list(self.image_shape_),
                "n_train": self.n_train_, "n_empty": self.n_empty_, "n_fits": self.n_fits_}
        state = {k: v.detach().cpu() for k, v in self.module_.state_dict().items()}
        with atomic_path(Path(path)) as tmp:
            torch.save({"format": _FORMAT, "version": _VERSION, "meta": json.dumps(meta),
                        "state": state}, tmp)
        return Path(path)

    @classmethod
    def load(cls, path, template=None):
        """Read a model written by :meth:`save`; runs no code from the file.

        ``template``: an unfitted ROIPredictor whose parameters the saved model must
        match in its architecture (``n_filters``); the others (threshold, device ...)
        are the template's. Without one, the saved parameters are used.
        """
        path = Path(path)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"No ROI model at {path}.") from None
        except Exception as exc:
            raise ROIModelError(f"{path} is not an ROI model written by ROIPredictor.save "
                                f"(torch.load said: {exc}).") from exc
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ROIModelError(f"{path} is not an ROI model written by ROIPredictor.save.")
        if raw.get("version") != _VERSION:
            raise ROIModelError(f"{path} has ROI-model format version {raw.get('version')!r}; "
                                f"this xal-sklearn reads {_VERSION}.")
        meta = json.loads(raw["meta"])
        saved = meta["params"]
        model = cls(**saved) if template is None else template.__class__(
            **template.get_params())
        if list(model.n_filters) != list(saved["n_filters"]):
            raise ROIModelError(f"{path} holds an ROI model with n_filters "
                                f"{tuple(saved['n_filters'])}; the template has "
                                f"{tuple(model.n_filters)}.")
        module = ROINet(meta["image_shape"][0], tuple(saved["n_filters"]))
        try:
            module.load_state_dict(raw["state"])
        except RuntimeError as exc:
            raise ROIModelError(f"{path}: the weights do not fit the ROI network ({exc}).") \
                from None
        model.module_ = module.to(resolve_device(model.device)).eval()
        if resolve_device(model.device) == "cpu":
            to_channels_last(model.module_)
        model.image_shape_ = tuple(meta["image_shape"])
        model.n_train_, model.n_empty_ = meta["n_train"], meta["n_empty"]
        model.n_fits_ = meta.get("n_fits", 1)
        return model


def _grid(shape):
    return tuple(max(1, s // 4) for s in shape)


def _loss(logits, target, dice_weight):
    bce = F.binary_cross_entropy_with_logits(logits, target)
    if not dice_weight:
        return bce
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    has = t.sum(1) > 0  # an empty target has no Dice; the cross-entropy teaches it
    if not has.any():
        return bce
    soft = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + dice_weight * soft[has].mean()


def roi_model_quality(roi_model, X, roi_masks):
    """How well an ROI model draws the ROIs of ``X``: a Bunch.

    ``dice`` (mean Dice of the predicted mask over images with a lesion), ``roi_auc``
    (mean pixel ROC AUC of the predicted probabilities; chance 0.5), ``empty_correct``
    (share of annotated-empty images predicted empty; NaN if none), ``n``, and
    ``dice_per_image`` / ``roi_auc_per_image`` (NaN without a lesion).
    ``roi_model`` is a fitted :class:`ROIPredictor` or a callable ``f(X) -> masks``
    (whose masks then serve as probabilities too).
    """
    X = check_images(X)
    masks, has_lesion = check_roi_masks(roi_masks, len(X), X.shape[2:])
    if hasattr(roi_model, "predict_proba"):
        proba = roi_model.predict_proba(X)
        pred = proba >= _check_threshold(roi_model.threshold)
    else:
        pred = predict_pool_rois(roi_model, X)
        proba = pred.astype(np.float32)
    d = np.full(len(X), np.nan)
    a = np.full(len(X), np.nan)
    if has_lesion.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            d[has_lesion] = dice(pred[has_lesion].astype(np.float64), masks[has_lesion])
            a[has_lesion] = roi_auc(proba[has_lesion], masks[has_lesion])
    annotated = roi_annotated(roi_masks, len(X))
    empty = annotated & ~has_lesion
    empty_ok = (float(np.mean(~pred[empty].reshape(empty.sum(), -1).any(1)))
                if empty.any() else np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Bunch(dice=float(np.nanmean(d)) if has_lesion.any() else np.nan,
                     roi_auc=float(np.nanmean(a)) if has_lesion.any() else np.nan,
                     empty_correct=empty_ok, n=int(annotated.sum()),
                     dice_per_image=d, roi_auc_per_image=a)


def check_roi_callable_output(masks, n, spatial_shape, name="roi_model"):
    """The masks an ROI callable returned, checked: ``(n, *spatial)`` bool, no NaN."""
    if isinstance(masks, (list, tuple)) and any(m is None for m in masks):
        raise ROIModelError(f"{name} returned a list with None entries; return one mask per "
                            "image (an empty one where there is no ROI).")
    try:  # the checks every mask of the package goes through
        return check_roi_masks(masks, n, spatial_shape, name=name)[0]
    except (TypeError, ValueError) as exc:
        raise ROIModelError(f"{name} returned masks of shape {np.shape(masks)} for {n} images "
                            f"of {tuple(spatial_shape)} that do not fit: {exc}") from None


def predict_pool_rois(roi_model, X_pool, batch_size=None):
    """Predicted ROI masks of a pool, ``(N, H, W)`` bool, from a fitted ROI model or a
    callable (called on the whole pool; the output is checked)."""
    n = pool_length(X_pool)
    if hasattr(roi_model, "predict"):
        return roi_model.predict(X_pool, batch_size=batch_size)
    if isinstance(X_pool, torch.utils.data.Dataset):
        parts = [as_batch_tensor(x).numpy() for x, _, _, _ in iter_pool(X_pool, None, 256)]
        X_pool = np.concatenate(parts)
    shape = np.shape(X_pool)[2:]
    return check_roi_callable_output(roi_model(X_pool), n, shape)
