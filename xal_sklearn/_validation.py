"""Input checks shared by the estimator, Grad-CAM, scoring and the learner.

Every check raises ``ValueError``/``TypeError`` that names the argument, and
none of them modifies its input.
"""

import contextvars
import inspect
import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from skorch import NeuralNet
from torch import nn


def accepts_keyword(func, name):
    """Whether ``func`` has an explicit parameter ``name`` (``**kwargs`` does not count:
    modAL strategies forward them to ``predict_proba``)."""
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def check_numeric(arr, name="X"):
    """Raise ``TypeError`` unless ``arr`` holds numbers (or booleans)."""
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}.")


def check_images(X, name="X", dtype=np.float32):
    """Return ``X`` as a finite ``(N, C, H, W) or (N, C, D, H, W)`` array of ``dtype``.

    Accepts numpy arrays (memmaps included, which are read), torch tensors and
    nested sequences. 2-D images need 4 dimensions, 3-D volumes 5.
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from exc
    check_numeric(arr, name)
    if arr.ndim not in (4, 5):
        raise ValueError(
            f"{name} must be image-shaped: (n_samples, channels, height, width) for 2-D "
            f"images or (n_samples, channels, depth, height, width) for volumes; got "
            f"shape {arr.shape}. Add a channel axis with X[:, None] for grayscale."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples).")
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or infinite values in {n_bad} sample(s).")
    return arr


def check_finite_batch(batch, name="X_pool", offset=0):
    """Raise if a torch batch of a streamed pool holds NaN or inf."""
    bad = ~torch.isfinite(batch).reshape(len(batch), -1).all(dim=1)
    if bool(bad.any()):
        first = offset + int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"{name} contains NaN or infinite values (first at index {first}).")


class FaintMaskWarning(UserWarning):
    """Soft ROI masks whose every value lies below the 0.5 threshold count as empty."""


def binarize_masks(masks, name="roi_masks"):
    """Masks given as bool, 0/1, 0/255 or soft [0, 1] values -> bool (>= 0.5).

    NaN is refused (it is neither inside nor outside the ROI). A mask with
    positive values that all lie below 0.5 becomes empty; one warning counts them.
    """
    m = np.asarray(masks)
    if m.dtype == bool:
        return m
    if not np.issubdtype(m.dtype, np.number):
        raise TypeError(f"{name} must be boolean or numeric, got dtype {m.dtype}.")
    if m.size and np.issubdtype(m.dtype, np.floating) and np.isnan(m).any():
        raise ValueError(f"{name} contains NaN values; a mask pixel must be inside the ROI "
                         "(>= 0.5) or outside it.")
    if m.size and m.min() < 0:
        raise ValueError(f"{name} must not hold negative values.")
    out = m >= 0.5
    if m.ndim >= 2 and m.size:
        flat = m.reshape(len(m), -1) if m.ndim > 2 else m.reshape(1, -1)
        faint = int(((flat.max(axis=1) > 0) & (flat.max(axis=1) < 0.5)).sum())
        if faint:
            warnings.warn(
                f"{faint} mask(s) in {name} have positive values but none >= 0.5; they are "
                "treated as empty (no ROI). Rescale soft masks to a maximum of 1.",
                FaintMaskWarning, stacklevel=3)
    return out


def check_roi_masks(masks, n_samples, spatial_shape, name="roi_masks"):
    """Validate ROI masks against a set of images.

    Parameters
    ----------
    masks : None, array-like or sequence with ``None`` entries
        ``None`` means no sample has an ROI; a ``None`` entry in a list means
        that sample has none. A channel axis of size 1 is accepted.
    n_samples : int
    spatial_shape : tuple of int
        The images' ``X.shape[2:]``.

    Returns
    -------
    masks : ndarray of bool, shape (n_samples, H, W)
    available : ndarray of bool, shape (n_samples,)
        False where the mask is missing or empty (alignment undefined).
    """
    spatial_shape = tuple(spatial_shape)
    if masks is None:
        return (np.zeros((n_samples,) + spatial_shape, dtype=bool), np.zeros(n_samples, bool))
    if isinstance(masks, (list, tuple)) and any(m is None for m in masks):
        if len(masks) != n_samples:
            raise ValueError(
                f"{name} has {len(masks)} entries but there are {n_samples} images."
            )
        out = np.zeros((n_samples,) + spatial_shape, dtype=bool)
        for i, m in enumerate(masks):
            if m is not None:
                out[i] = _check_mask_shape(binarize_masks(m, name)[None], 1, spatial_shape,
                                           f"{name}[{i}]")[0]
        return out, out.reshape(n_samples, -1).any(axis=1)
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    out = _check_mask_shape(binarize_masks(masks, name), n_samples, spatial_shape, name)
    return out, out.reshape(n_samples, -1).any(axis=1)


def roi_annotated(masks, n_samples):
    """Which of ``n_samples`` images carry an ROI annotation, as ``(n,)`` bool.

    ``None`` annotates none, a list or tuple the entries that are not ``None``, and an
    array every image: there an empty mask means "annotated, no lesion" (a normal
    image), which an ROI model learns from, while a ``None`` entry means nobody drew.
    """
    if masks is None:
        return np.zeros(n_samples, bool)
    if isinstance(masks, (list, tuple)):
        return np.array([m is not None for m in masks], bool)
    return np.ones(n_samples, bool)


def with_missing(masks, annotated):
    """Masks as :func:`roi_annotated` reads them: the array itself when every image is
    annotated, else a list with ``None`` for the images nobody drew on."""
    if np.all(annotated):
        return masks
    return [m if a else None for m, a in zip(masks, annotated)]


def _check_mask_shape(m, n_samples, spatial_shape, name):
    if m.ndim == len(spatial_shape) + 2 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != len(spatial_shape) + 1 or len(m) != n_samples:
        if m.ndim >= 1 and len(m) != n_samples:
            raise ValueError(f"{name} has {len(m)} masks but there are {n_samples} images.")
        raise ValueError(
            f"{name} must have shape (n_samples, *image_shape) = "
            f"({n_samples}, {', '.join(map(str, spatial_shape))}); got {m.shape}."
        )
    if m.shape[1:] != spatial_shape:
        raise ValueError(
            f"{name} have spatial shape {m.shape[1:]} but the images are {spatial_shape}."
        )
    return m


def epochs_from_setting(value, max_epochs, name, whole=False):
    """A count of epochs given as an int (epochs) or a float share of ``max_epochs``.

    The share lies in [0, 1), or in [0, 1] with ``whole`` (all epochs allowed);
    anything else (bools, negatives, strings) is refused naming ``name``.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)) \
            and (0 <= value <= 1 if whole else 0 <= value < 1):
        return int(round(float(value) * max_epochs))
    raise ValueError(f"{name} must be an integer number of epochs >= 0 or a share of "
                     f"max_epochs in [0, 1{']' if whole else ')'}, got {value!r}.")


def check_n_instances(n_instances, n_pool):
    if isinstance(n_instances, bool) or not isinstance(n_instances, numbers.Integral):
        raise TypeError(f"n_instances must be an integer, got {n_instances!r}.")
    if n_instances < 1:
        raise ValueError(f"n_instances must be >= 1, got {n_instances}.")
    if n_instances > n_pool:
        raise ValueError(
            f"n_instances={n_instances} is larger than the pool ({n_pool} samples)."
        )
    return int(n_instances)


def check_finite_nonnegative(value, name):
    """Refuse a ``value`` that is not a real, finite number >= 0 (bools refused too)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    return float(alpha)


def resolve_estimator(classifier):
    """Find the fitted torch-backed estimator behind ``classifier``.

    Returns ``(net, preprocess)``: ``net`` is a fitted skorch net (normally a
    :class:`~xal_sklearn.CNNClassifier`), ``preprocess`` the fitted steps of a
    :class:`~sklearn.pipeline.Pipeline` in front of it (or ``None``).
    Accepts an active learner (anything with a ``query_strategy``: ours keeps
    the fitted model in ``estimator_``, modAL's in ``estimator``), a fitted
    net, or a fitted pipeline ending in one.
    """
    est = classifier
    if hasattr(est, "query_strategy"):  # duck-typed, so this layer imports no learner
        est = est.estimator_ if hasattr(est, "estimator_") else getattr(est, "estimator", est)
    preprocess = None
    if isinstance(est, Pipeline):
        preprocess = est[:-1] if len(est.steps) > 1 else None
        est = est[-1]
    if not isinstance(est, NeuralNet):
        raise TypeError(
            "Expected a skorch network (such as CNNClassifier), a Pipeline ending in one, "
            f"or an active learner wrapping one; got {type(est).__name__}."
        )
    if not getattr(est, "initialized_", False) or not isinstance(est.module_, nn.Module):
        raise NotFittedError(f"This {type(est).__name__} is not fitted yet; call fit first.")
    return est, preprocess


def resolve_layer(module, layer):
    """A module path (``"features.3"``), an ``nn.Module`` or None -> submodule.

    None picks the layer the network names as ``default_gradcam_layer`` (the
    backbones of :mod:`xal_sklearn.backbones` do), else the last
    ``Conv2d``/``Conv3d`` in registration order.
    """
    if layer is None and isinstance(getattr(module, "default_gradcam_layer", None), str):
        layer = module.default_gradcam_layer
    if layer is None:
        convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        if not convs:
            raise ValueError(
                f"{type(module).__name__} has no Conv2d/Conv3d layer; pass the Grad-CAM "
                "layer explicitly (gradcam_layer / layer)."
            )
        return convs[-1]
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in module.modules()):
            raise ValueError("The given Grad-CAM layer is not a submodule of the network.")
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module path string or nn.Module, got {layer!r}.")
    try:
        return module.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        raise ValueError(
            f"Grad-CAM layer {layer!r} is not in {type(module).__name__}; "
            f"available: {', '.join(names)}."
        ) from None


def check_input_shape(net, shape, name="X_pool"):
    """Refuse images whose shape the fitted ``net`` cannot take, naming both shapes.

    ``shape`` is one image's ``(C, H, W)`` or ``(C, D, H, W)``. Channels and the
    number of spatial axes must equal those seen in ``fit``; another spatial size
    is accepted when the module runs on it (global pooling), which one zero image probes.
    """
    trained = getattr(net, "image_shape_", None)
    if trained is None or tuple(shape) == tuple(trained):
        return
    shape, trained = tuple(int(v) for v in shape), tuple(trained)
    what = f"{name} images have shape {shape} but the network was trained on {trained}"
    if len(shape) != len(trained):
        kinds = {3: "2-D images (C, H, W)", 4: "3-D volumes (C, D, H, W)"}
        raise ValueError(f"{what}: {kinds.get(len(shape), 'another layout')} given to a net "
                         f"trained on {kinds.get(len(trained), 'another layout')}.")
    if shape[0] != trained[0]:
        raise ValueError(f"{what}: {shape[0]} channel(s) instead of {trained[0]}.")
    try:
        probe_forward(net.module_, shape)
    except RuntimeError as exc:
        raise ValueError(f"{what}; the module cannot take that spatial size ({exc}).") from None


_PROBING = contextvars.ContextVar("xal_probing", default=False)


def probing():
    """True while :func:`probe_forward` runs: hooks that collect a batch's activations
    (embeddings) skip its one zero image."""
    return _PROBING.get()


def probe_forward(module, shape, layer=None):
    """Run ``module`` on one zero image of ``shape`` (eval mode, no gradients).

    Returns the output of ``layer`` (a submodule) if given, else the module's output.
    The module's train/eval mode is restored; torch errors propagate. While it runs,
    :func:`probing` is True.
    """
    token = _PROBING.set(True)
    try:
        return _probe_forward(module, shape, layer)
    finally:
        _PROBING.reset(token)


def _probe_forward(module, shape, layer):
    param = next(module.parameters(), None)
    probe = torch.zeros((1,) + tuple(shape), device=param.device if param is not None else "cpu")
    seen = {}
    handle = None if layer is None else layer.register_forward_hook(
        lambda m, i, o: seen.setdefault("out", o))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(probe)
    finally:
        if handle is not None:
            handle.remove()
        module.train(was_training)
    return out if layer is None else seen.get("out")


def resolve_device(device):
    """``"auto"`` as the device it stands for here (the GPU when torch sees one, else the
    CPU); any other value as it is."""
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def device_problem(device):
    """What keeps torch from using ``device`` here, in words, or None when it can.

    ``"cpu"`` and ``"auto"`` always work; ``"cuda"``/``"cuda:N"`` need a CUDA
    build of torch and a visible device N; ``"mps"`` needs Apple's Metal backend.
    """
    if isinstance(device, str) and device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return (f"{device!r} is not a device; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built() and torch.version.hip is None:
            return f"this torch build ({torch.__version__}) has no CUDA support"
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return (f"torch {torch.__version__} has CUDA support but sees no CUDA device "
                    "(no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)")
        if dev.index is not None and dev.index >= count:
            return f"cuda:{dev.index} was asked for but only {count} CUDA device(s) are visible"
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        return "Apple's MPS backend is not available in this torch build or on this machine"
    elif dev.type not in ("cpu", "cuda", "mps"):
        return f"device type {dev.type!r} is not supported; use 'cpu', 'cuda' or 'auto'"
    return None


def check_device(device, name="device"):
    """Raise ``ValueError`` in one line when torch cannot use ``device`` on this machine."""
    problem = device_problem(device)
    if problem is not None:
        raise ValueError(f"{name}={device!r} cannot be used: {problem}; use {name}='cpu', "
                         "or 'auto' (the GPU when there is one, else the CPU).")


#: How many problems an error about a whole file lists before it only counts the rest.
MAX_LISTED_PROBLEMS = 20


def list_problems(what, problems, note="", limit=MAX_LISTED_PROBLEMS):
    """One message for every problem found in a file: the first ``limit``, then a count.

    ``"<what>: <n> problem(s)<note>."`` and the problems, one per line.
    """
    listed = list(problems)[:limit]
    more = len(problems) - len(listed)
    return (f"{what}: {len(problems)} problem(s){note}.\n  " + "\n  ".join(listed)
            + (f"\n  ... and {more} more." if more else ""))
