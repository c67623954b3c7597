"""A skorch classifier with defaults for active learning on small image sets."""

import inspect
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer, LRScheduler, PassthroughScoring, PrintLog
from torch.optim.lr_scheduler import CosineAnnealingLR

from ._dataset import ImageDataset
from ._names import PRECISION_NAMES
from ._validation import check_device, check_images, check_input_shape, resolve_device
from .backbones import build_backbone, copy_adapted
from .finetune import (FreezeEncoder, ProbeHead, check_head_init, freeze_epoch_count,
                       warn_random_head)
from .modules import SmallCNN, channels_last_weights, to_channels_last
from .pretrain import as_encoder_weights
from .roi_loss import ROI_DEFAULTS, check_roi_loss, check_roi_settings, with_legacy_settings
from .roi_training import ROITrainingMixin

__all__ = ["CNNClassifier"]


class _FitInterrupted(Exception):
    """Carries a KeyboardInterrupt past skorch, which would swallow it."""


#: ``precision`` values: the dtype of the training forward pass under autocast
PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16)))


def check_precision(precision):
    """Refuse a ``precision`` that :class:`CNNClassifier` does not know, by name."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}.")


def _as_float32(y_pred):
    if isinstance(y_pred, torch.Tensor):
        return y_pred.float() if y_pred.is_floating_point() else y_pred
    if isinstance(y_pred, tuple):
        return tuple(_as_float32(t) for t in y_pred)
    return y_pred


def _encoded_accuracy(net, X, y):
    # y from skorch's validation batches is already class-index encoded
    return float(np.mean(net.predict_proba(X).argmax(axis=1) == np.asarray(y)))


class CNNClassifier(ROITrainingMixin, NeuralNetClassifier):
    """Image classifier: a skorch ``NeuralNetClassifier`` tuned for active learning.

    Differences from skorch's defaults, each chosen for small labelled sets:

    * cross-entropy on logits (the module returns logits; ``predict_proba``
      applies the softmax);
    * no internal validation split (``train_split=None``): skorch's default
      5-fold split fails on a handful of samples;
    * all classes are known up front through ``n_classes`` or ``classes``, so
      ``predict_proba`` keeps a stable column order even when a class is
      missing from the first labelled batch. Labels may be any sortable
      values; they are encoded to column indices internally and ``predict``
      returns the original labels;
    * the learning rate follows a cosine schedule from ``lr`` to 0 over
      ``max_epochs`` (``lr_schedule="cosine"``): with a fixed epoch budget and
      no validation set to stop early, ending on a small learning rate makes
      the final weights, and so the curves of an AL run, far less noisy (test
      accuracy over 3 seeds at 450 brain-MRI labels: 0.71 +- 0.07 with a constant
      rate, 0.77 +- 0.01 with the cosine schedule);
    * images of any numeric dtype (float16/64, uint8, int16 ...) and layout
      (strided or transposed views, memmaps) are cast to float32 batch by
      batch, and labels to int64;
    * on the CPU, channels-last layout for training and prediction, and
      optionally bfloat16 mixed precision (``precision="bf16-mixed"``);
    * optionally, the ROI masks of the training images teach the network
      where to look: ``roi_loss`` adds an attention loss
      (:mod:`xal_sklearn.roi_loss`) for every sample that has an ROI;
    * Ctrl-C during ``fit`` raises ``KeyboardInterrupt`` (skorch would stop
      quietly and return a half-trained model, which an active-learning loop
      would then record as a finished round);
    * ``random_state`` seeds weight initialisation and batch shuffling without
      touching the global torch RNG;
    * ``device="auto"`` picks CUDA when available.

    Parameters
    ----------
    module : torch.nn.Module class or instance, or a backbone name, default=SmallCNN
        The network. A class is instantiated with ``module__*`` parameters;
        if its constructor takes ``n_classes`` / ``in_channels`` and they are
        not given, they are filled in from the classes and from ``X``.
        ``"resnet18"``, ``"resnet50"``, ``"densenet121"`` or
        ``"efficientnet_b0"`` build torchvision's network for the images'
        channels and the classes (:mod:`xal_sklearn.backbones`; needs the
        ``backbones`` extra), with ``module__weights=PATH`` a local ImageNet
        state dict to start from (never downloaded). An instance whose first
        convolution or last linear layer does not fit the data is adapted the
        same way, on a copy.
    n_classes : int, optional
        Number of classes; labels are then ``0 .. n_classes - 1``.
    classes : array-like, optional
        The class labels, in the column order of ``predict_proba``. Takes
        precedence over ``n_classes``. With neither, classes are inferred from
        the ``y`` of the first fit (as scikit-learn classifiers do).
    gradcam_layer : str or None, default=None
        Module path of the layer that Grad-CAM explains (``"features.6"``);
        None means the layer the network names as ``default_gradcam_layer``
        (for :class:`~xal_sklearn.SmallCNN` the convolution of the taught
        block, beside its context branch), else the last ``Conv2d``/``Conv3d``.
    roi_loss : {"dice", "outside", "rank", "counterexample", "rrr"} or None, default=None
        Attention loss on samples with an ROI (see :mod:`xal_sklearn.roi_loss`):
        ``"rank"`` (recommended, ``roi_loss.DEFAULT_ROI_LOSS``) a soft pairwise
        ROC AUC asking every ROI cell of the true class's Grad-CAM at
        ``gradcam_layer`` to outrank every other cell; ``"dice"`` 1 - soft Dice
        of that Grad-CAM and the mask (the reference method); ``"outside"`` the
        share of its mass outside the mask; ``"counterexample"`` the
        cross-entropy of the image with its context swapped for another's;
        ``"rrr"`` squared input gradients outside the mask. None trains on
        cross-entropy only.
    roi_weight : float >= 0, default=1.0
        Weight of the attention loss against the cross-entropy (with
        ``roi_balance="ce"``: its size as a share of the cross-entropy's).
        Chosen with :class:`~xal_sklearn.SmallCNN`'s context branch on
        validation groups of the brain-MRI set (docs/results.md).
    roi_balance : {"ce", "fixed"}, default="ce"
        ``"ce"`` rescales the attention term at every step so that its value is
        ``roi_weight`` x the batch's cross-entropy (a constant factor, not
        differentiated), so one weight means the same for every loss and data
        set; ``"fixed"`` adds ``roi_weight`` x the term as it comes.
    roi_dilation : int >= 0, default=2
        Cells by which masks are grown on the attention grid (pixels of the
        input for ``"counterexample"``), forgiving the coarse grid at lesion
        borders and taking in the lesion's surroundings.
    roi_warmup : int >= 0 or float in [0, 1), default=0.4
        Epochs of cross-entropy only at the start of each ``fit`` before the
        attention loss is added; a float is a share of ``max_epochs``.
    roi_conflict : {"separate", "project", "sum"}, default="separate"
        ``"project"``: at each step the attention term's gradient loses its
        component along the cross-entropy's gradient when the two point against
        each other (one-sided PCGrad, ``roi_loss.project_conflict``), so the map
        is taught without pushing the cross-entropy up; it costs a second
        backward pass. ``"separate"``: projected likewise, and kept out of the
        optimizer: the optimizer steps on the cross-entropy's gradient alone, then
        the term's is applied scaled by the optimizer's second-moment estimate of
        the cross-entropy's (``roi_loss.step_term_apart``), so under Adam the term
        does not slow the cross-entropy's own steps. ``"sum"``: the gradient of
        the sum, as plain backpropagation gives it.
    lr_schedule : {"cosine", None}, default="cosine"
        Cosine annealing of the learning rate over each ``fit`` (restarting at
        every ``partial_fit``), or a constant rate.
    init_weights : None, path or EncoderWeights, default=None
        Pretrained feature-extractor weights (from
        :func:`~xal_sklearn.pretrain_encoder`, or a file its result was saved
        to): every ``fit`` builds the network, loads them into everything but
        the last linear layer (which starts fresh, sized to the classes) and
        trains from there. A file that is missing, foreign, or made for
        another network is refused with the mismatch named, before anything
        changes.
    head_init : {"random", "probe"}, default="random"
        How each fresh ``fit`` starts the last linear layer: random (PyTorch's
        initialisation), or ``"probe"``: a scikit-learn logistic regression on
        the network's features of the training images, folded into the layer
        (:class:`~xal_sklearn.finetune.ProbeHead`). With a warm start
        (``init_weights``) the head then already agrees with the pretrained
        features, so fine-tuning refines them rather than washing them out; a
        warm start with a random head and no ``freeze_epochs`` leaves that out
        and says so in a :class:`~xal_sklearn.finetune.WarmStartWarning`
        (brain MRI, validation groups: 0.713 against 0.795 with the probe).
    freeze_epochs : int >= 0 or float in [0, 1], default=0
        Epochs at the start of each ``fit`` in which only the last linear layer
        is trained, the rest of the network frozen (its batch-norm statistics
        still adapt); a float is a share of ``max_epochs``, and ``1.0`` trains
        the head alone all the way (a linear probe). Meant for warm starts
        (``init_weights``, ``module__weights``): the fresh head is fitted to the
        pretrained features before its gradients reach them
        (:class:`~xal_sklearn.finetune.FreezeEncoder`).
    precision : {"float32", "bf16-mixed"}, default="float32"
        Arithmetic of the training forward pass. ``"bf16-mixed"`` runs it under
        ``torch.autocast`` with bfloat16 (weights, gradients, optimiser state and
        the loss stay float32), which halves the memory traffic that bounds a
        small CNN's training on the CPU: 2.1-2.2x faster than skorch's plain path
        on 2 cores, against 1.7-1.8x for float32, with test accuracy within seed noise
        of float32 (docs/benchmarks.md). It needs a CPU with AVX512-BF16 or AMX
        (recent EPYC and Xeon); elsewhere it may be slower, so measure first.
        Prediction and Grad-CAM always run in float32.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the cross-entropy, with scikit-learn's meaning:
        None weighs every image alike; "balanced" weighs class c by
        ``n_samples / (n_present_classes * n_c)`` over the labels of each ``fit``
        (a class absent from them gets 1: it has no image to weigh); a dict maps
        class labels to weights (classes it leaves out get 1). For classes of
        unequal size, where the larger ones otherwise decide the predictions.
    random_state : int, RandomState instance or None, default=None
        Seeds torch for initialisation and shuffling during ``fit``.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
        Where the network runs; ``"auto"`` means CUDA when available. A device
        this machine cannot use (``"cuda"`` with a CPU-only torch build or no
        visible GPU) is refused by ``fit`` in one line, before anything changes.
    criterion, optimizer, lr, max_epochs, batch_size, train_split, verbose
        As in skorch, with the defaults above.
    **kwargs
        Any other skorch parameter (``module__*``, ``optimizer__*``,
        ``iterator_train__*``, ``callbacks`` ...).

    Attributes
    ----------
    classes_ : ndarray
        Class labels in column order.
    n_channels_in_ : int
        Number of image channels seen in ``fit``.
    image_shape_ : tuple of int
        Shape of one training image, ``(C, H, W)`` or ``(C, D, H, W)``; pools
        of another channel count or dimensionality are refused by name.
    class_weight_ : ndarray of float32 (n_classes,) or None
        The cross-entropy's class weights of the last ``fit``, in column order
        (None with ``class_weight=None``).
    module_, history_ : as in skorch.

    Examples
    --------
    >>> from xal_sklearn import CNNClassifier
    >>> net = CNNClassifier(n_classes=3, max_epochs=5, random_state=0)
    >>> net.fit(X, y).predict_proba(X_pool)  # doctest: +SKIP
    """

    #: On the CPU, keep 2-D conv weights and batches in channels-last layout, for training
    #: and prediction: 1.7-1.8x faster training and 2.3-2.5x faster prediction on 2 cores;
    #: the results differ by float rounding, which training amplifies, and test accuracy
    #: stays within seed noise (docs/benchmarks.md). False keeps skorch's plain layout.
    cpu_channels_last = True

    def __init__(
        self,
        module=SmallCNN,
        *,
        n_classes=None,
        classes=None,
        gradcam_layer=None,
        roi_loss=None,
        roi_weight=ROI_DEFAULTS["roi_weight"],
        roi_dilation=ROI_DEFAULTS["roi_dilation"],
        roi_warmup=ROI_DEFAULTS["roi_warmup"],
        roi_balance=ROI_DEFAULTS["roi_balance"],
        roi_conflict=ROI_DEFAULTS["roi_conflict"],
        lr_schedule="cosine",
        precision="float32",
        init_weights=None,
        head_init="random",
        freeze_epochs=0,
        class_weight=None,
        random_state=None,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=15,
        batch_size=32,
        train_split=None,
        device="cpu",
        verbose=0,
        **kwargs,
    ):
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            classes=classes,
            device=device,
            verbose=verbose,
            **kwargs,
        )
        self.n_classes = n_classes
        self.gradcam_layer = gradcam_layer
        self.roi_loss = roi_loss
        self.roi_weight = roi_weight
        self.roi_dilation = roi_dilation
        self.roi_warmup = roi_warmup
        self.roi_balance = roi_balance
        self.roi_conflict = roi_conflict
        self.lr_schedule = lr_schedule
        self.precision = precision
        self.init_weights = init_weights
        self.head_init = head_init
        self.freeze_epochs = freeze_epochs
        self.class_weight = class_weight
        self.random_state = random_state

    # --- device="auto": the parameter keeps the user's value, skorch sees a real device
    @property
    def device(self):
        return resolve_device(self.__dict__.get("_device_param", "cpu"))

    @device.setter
    def device(self, value):
        self._device_param = value

    def _get_param_names(self):
        # the parameter is "device"; its value lives in _device_param
        return ["device" if k == "_device_param" else k for k in super()._get_param_names()]

    def get_params(self, deep=True, **kwargs):
        params = super().get_params(deep=deep, **kwargs)
        params["device"] = self.__dict__.get("_device_param", "cpu")
        return params

    def __getstate__(self):
        state = super().__getstate__()
        state["device"] = self.device  # skorch maps tensors by the concrete device
        return state

    def __setstate__(self, state):
        param = state.pop("_device_param", "cpu")
        state.setdefault("precision", "float32")  # pickled before the parameter existed
        state = with_legacy_settings(state, ("roi_balance", "roi_conflict"))  # likewise
        super().__setstate__(state)
        # skorch may have remapped an unavailable CUDA device to the CPU
        resolved = self.__dict__.pop("device", self.__dict__.get("_device_param"))
        self._device_param = "auto" if param == "auto" else resolved

    # --- classes
    @property
    def classes_(self):
        if self.classes is not None:
            return super().classes_
        if self.n_classes is not None:
            return np.arange(self.n_classes)
        return super().classes_

    def _encode_labels(self, y):
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {y.shape}.")
        classes = self.classes_
        order = np.argsort(classes, kind="stable")
        pos = np.searchsorted(classes[order], y)
        pos = np.clip(pos, 0, len(classes) - 1)
        unknown = classes[order][pos] != y
        if unknown.any():
            raise ValueError(
                f"y contains labels not in classes_ {classes.tolist()}: "
                f"{np.unique(y[unknown]).tolist()}."
            )
        return order[pos].astype(np.int64)

    def __sklearn_is_fitted__(self):
        return bool(getattr(self, "initialized_", False))

    # --- skorch hooks
    @property
    def _default_callbacks(self):
        if self.lr_schedule not in ("cosine", None):
            raise ValueError(f"lr_schedule must be 'cosine' or None, got {self.lr_schedule!r}.")
        schedule = [("lr_schedule", LRScheduler(CosineAnnealingLR, T_max=self.max_epochs))] \
            if self.lr_schedule == "cosine" else []
        if self.head_init == "probe":
            schedule.append(("probe_head", ProbeHead()))
        if freeze_epoch_count(self.freeze_epochs, self.max_epochs):
            schedule.append(("freeze_encoder", FreezeEncoder(self.freeze_epochs)))
        return schedule + [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", EpochScoring(_encoded_accuracy, name="valid_acc",
                                       lower_is_better=False)),
            ("print_log", PrintLog()),
        ]

    def _make_module(self, n_classes, in_channels):
        kwargs = self.get_params_for("module")
        if isinstance(self.module, str):  # a torchvision backbone by name
            module = build_backbone(self.module, n_classes=n_classes, in_channels=in_channels,
                                    **kwargs)
            if self.init_weights is not None:
                as_encoder_weights(self.init_weights).load_into(module)
            return module
        if inspect.isclass(self.module):
            accepted = inspect.signature(self.module).parameters
            if "n_classes" in accepted and "n_classes" not in kwargs:
                kwargs["n_classes"] = n_classes
            if "in_channels" in accepted and "in_channels" not in kwargs:
                kwargs["in_channels"] = in_channels
        module = self.initialized_instance(self.module, kwargs)
        if isinstance(self.module, torch.nn.Module):  # a user's torchvision / timm instance
            module = copy_adapted(module, n_classes, in_channels)
        if self.init_weights is not None:  # every fit starts from the pretrained features
            as_encoder_weights(self.init_weights).load_into(module)
        return module

    def initialize_module(self):
        self.module_ = self._make_module(len(self.classes_), getattr(self, "n_channels_in_", 1))
        if self._channels_last():
            to_channels_last(self.module_)
        return self

    def _channels_last(self):
        return self.cpu_channels_last and str(self.device) == "cpu"

    def get_dataset(self, X, y=None):
        if isinstance(X, torch.Tensor) and X.dtype != torch.float32 and X.is_floating_point():
            X = X.float()
        if isinstance(X, np.ndarray) and not (X.dtype == np.float32 and X.flags.c_contiguous):
            # cast per item: no full copy of an integer memmap, and no negative strides
            return ImageDataset(X, None if y is None else self._encode_labels(y))
        if y is not None and not isinstance(X, torch.utils.data.Dataset):
            y = self._encode_labels(y)
        return super().get_dataset(X, y)

    @contextmanager
    def _seeded(self):
        if self.random_state is None:
            yield
            return
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        devices = list(range(torch.cuda.device_count())) if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _prepare_fit(self, X, y, roi_masks, continuing):
        """Validate everything before any state changes; return ``(X, y)`` for skorch.

        ``continuing``: training goes on from the fitted weights, so the images
        must have the shape the network was trained on.
        """
        check_roi_loss(self.roi_loss, self.roi_weight)
        check_precision(self.precision)
        check_device(self.__dict__.get("_device_param", "cpu"))  # one line, not skorch's traceback
        check_roi_settings(self.roi_balance, self.roi_dilation, self.roi_warmup,
                           self.roi_conflict)
        freeze_epoch_count(self.freeze_epochs, 1)
        check_head_init(self.head_init)
        if self.init_weights is not None and self.head_init == "random" \
                and not self.freeze_epochs and not continuing:
            warn_random_head()
        image_shape = None
        if not isinstance(X, torch.utils.data.Dataset):
            X = check_images(X)
            image_shape = tuple(int(v) for v in X.shape[1:])
            if continuing:
                check_input_shape(self, image_shape, "X")
        if y is not None:
            y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
            if len(y) != len(X):
                raise ValueError(f"X has {len(X)} samples but y has {len(y)} labels.")
        masks = self._check_fit_masks(roi_masks, X)
        known = self.classes is not None or self.n_classes is not None
        # labels outside fixed classes are refused here, before anything changes
        encoded = self._encode_labels(y) if y is not None and known else None
        if self.init_weights is not None and not continuing:
            # a file that is missing, foreign or of another shape fails here, not half-way
            n_classes = len(self.classes_) if known else len(np.unique(y))
            channels = image_shape[0] if image_shape else getattr(self, "n_channels_in_", 1)
            self._make_module(n_classes, channels)
        weights = self._class_weights(y, encoded, known)
        if y is not None and not known:
            self.classes_inferred_ = np.unique(y)
        self.class_weight_ = weights
        if image_shape is not None:
            self.n_channels_in_, self.image_shape_ = image_shape[0], image_shape
        if masks is not None:
            X, y = ImageDataset(X, self._encode_labels(y) if encoded is None else encoded,
                                masks), None
        return X, y

    # --- training with ROIs, through skorch's hooks
    def infer(self, x, **fit_params):
        if isinstance(x, Mapping) and "roi" in x:  # an ImageDataset batch with masks
            x = x["x"]
        if isinstance(x, torch.Tensor) and x.dim() == 4 and self._channels_last():
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "float32" or not self.module_.training:
            return super().infer(x, **fit_params)
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=PRECISIONS[self.precision]):
            y_pred = super().infer(x, **fit_params)
        return _as_float32(y_pred)  # the loss is computed in float32

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as exc:
            # skorch ends training this way after an interrupt too (it unfreezes the encoder)
            self.notify("on_train_end", X=X, y=y)
            raise _FitInterrupted from exc

    def fit(self, X, y, roi_masks=None, **fit_params):
        """Initialise (unless ``warm_start``) and train on images ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, channels, height, width)
            Images (or volumes with an extra depth axis), finite values of any
            numeric dtype.
        y : array-like of shape (n_samples,)
            Labels, each one of ``classes_``.
        roi_masks : array-like (n_samples, H', W'), list with None entries, optional
            ROI masks (bool, 0/1, 0/255 or soft >= 0.5) at the images' resolution
            or any other with the same aspect ratio; an empty or None mask means
            "no ROI" (cross-entropy only). Used when ``roi_loss`` is set, else
            ignored with a warning.

        Notes
        -----
        Every argument is checked before anything changes; Ctrl-C during
        training raises ``KeyboardInterrupt``.
        """
        continuing = bool(self.warm_start and self.initialized_)
        X, y = self._prepare_fit(X, y, roi_masks, continuing)
        return self._train(X, y, continuing, _routing_method="fit", **fit_params)

    def partial_fit(self, X, y=None, classes=None, roi_masks=None, **fit_params):
        """Continue training on ``X, y`` (initialises first if needed); see :meth:`fit`."""
        continuing = bool(self.initialized_)
        X, y = self._prepare_fit(X, y, roi_masks, continuing)
        return self._train(X, y, continuing, **fit_params)

    def _class_weights(self, y, encoded, known):
        """The cross-entropy's weight per column for labels ``y`` (checked, not stored)."""
        if self.class_weight is None or y is None:
            return None
        if "criterion__weight" in self.get_params():
            raise ValueError("Pass class_weight or criterion__weight, not both.")
        classes = self.classes_ if known else np.unique(y)
        codes = encoded if encoded is not None else np.searchsorted(classes, y)
        weights = np.ones(len(classes), dtype=np.float32)
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            counts = np.bincount(codes, minlength=len(classes))
            present = counts > 0
            weights[present] = len(codes) / (present.sum() * counts[present])
        elif isinstance(self.class_weight, Mapping):
            unknown = [k for k in self.class_weight if k not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight names {unknown!r}, which are not classes; "
                                 f"the classes are {classes.tolist()!r}.")
            for k, v in self.class_weight.items():
                if not (isinstance(v, (int, float, np.number)) and np.isfinite(v) and v >= 0):
                    raise ValueError(f"class_weight[{k!r}] must be a number >= 0, got {v!r}.")
                weights[classes.tolist().index(k)] = v
        else:
            raise ValueError('class_weight must be None, "balanced" or a dict of class label '
                             f"-> weight; got {self.class_weight!r}.")
        return weights

    def _train(self, X, y, continuing, **fit_params):
        """Initialise unless ``continuing``, check the attention layer, run skorch's loop."""
        with self._seeded():
            if not continuing:
                self.initialize()
            if self.class_weight_ is not None:
                # the criterion's own weight buffer: skorch's get_loss applies it
                self.criterion_.weight = torch.as_tensor(self.class_weight_,
                                                         device=self.device)
            elif self.__dict__.get("_weighted_criterion"):  # set by an earlier fit
                self.criterion_.weight = None
            self._weighted_criterion = self.class_weight_ is not None
            try:
                self._check_attention_layer()
            except ValueError:
                self.initialized_ = continuing  # a fresh module is not a fitted one
                raise
            try:
                return NeuralNetClassifier.partial_fit(self, X, y, **fit_params)
            except _FitInterrupted:
                raise KeyboardInterrupt from None

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        if self.initialized_ and not isinstance(X, torch.utils.data.Dataset):
            shape = np.shape(X)
            if len(shape) >= 2:
                check_input_shape(self, shape[1:], "X")
        if not (self.initialized_ and self._channels_last()):
            return super().predict_proba(X)
        with channels_last_weights(self.module_):
            return super().predict_proba(X)

    def predict(self, X):
        """Class labels (elements of ``classes_``) of the images ``X``."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
