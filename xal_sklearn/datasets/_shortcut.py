"""Spurious features injected into any data set: the shortcut benchmark.

A shortcut is a feature that predicts the label in the training pool but not at
test time. Real medical images carry them: hospital tokens and laterality markers
burned into X-rays, site- and scanner-specific intensity, the borders and
collimation of one machine. Explanation-guided learning is meant to pay exactly
there (training on data with the shortcut, testing on data without it), so
:func:`add_shortcut` puts one into any loaded data set under control: it agrees with
the label with probability ``agree`` in the pool, and is independent of the label on
``test_idx``.
"""

import numbers

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._split import group_train_test_split, subset

__all__ = ["SHORTCUT_KINDS", "add_shortcut", "shortcut_split"]

#: The kinds of spurious feature, each with the real artefact it imitates.
SHORTCUT_KINDS = {
    "marker": "a bright square token in a class-dependent corner (more squares for classes "
              "past the fourth), as hospital tokens and laterality markers burned into "
              "X-rays",
    "intensity": "a class-dependent global contrast change (images scaled by 0.8 ... 1.2), "
                 "as between sites and scanners",
    "border": "a bright frame along a class-dependent edge of the image (thicker for "
              "classes past the fourth), as the collimation borders and padding of one "
              "machine or site",
}


def _check(data, kind, agree, test_idx):
    if kind not in SHORTCUT_KINDS:
        raise ValueError(f"Unknown shortcut kind {kind!r}; choose from "
                         f"{', '.join(SHORTCUT_KINDS)}.")
    if (isinstance(agree, bool) or not isinstance(agree, numbers.Real)
            or not 0 <= float(agree) <= 1):
        raise ValueError(f"agree must be a probability in [0, 1], got {agree!r}.")
    for key in ("X", "y"):
        if key not in data:
            raise ValueError(f"data lacks {key!r}; give a Bunch from xal_sklearn.datasets.")
    if "shortcut" in data:
        raise ValueError(f"data already carries a {data['shortcut']['kind']!r} shortcut; "
                         "inject one into the data set as loaded.")
    X = data["X"]
    if not isinstance(X, np.ndarray) or X.ndim != 4:
        raise ValueError(f"add_shortcut draws on 2-D images (N, C, H, W) held in a numpy "
                         f"array; got {type(X).__name__} of shape {np.shape(X)}.")
    if not np.issubdtype(X.dtype, np.floating):
        raise TypeError(f"add_shortcut draws on floating-point images in [0, 1], as the "
                        f"loaders return them; got dtype {X.dtype}.")
    if X.shape[1] not in (1, 3):
        raise ValueError(f"add_shortcut draws on 1- or 3-channel images; got "
                         f"{X.shape[1]} channels.")
    if min(X.shape[2:]) < 16:
        raise ValueError(f"Images of {X.shape[3]}x{X.shape[2]} are too small to carry a "
                         "visible shortcut (need at least 16 x 16).")
    y = np.asarray(data["y"])
    if y.shape != (len(X),):
        raise ValueError(f"data.y has shape {y.shape}; expected ({len(X)},).")
    n = len(X)
    if test_idx is None:
        test = np.zeros(0, dtype=np.intp)
    else:
        test = np.asarray(test_idx)
        if test.dtype == bool:
            if test.shape != (n,):
                raise ValueError(f"A boolean test_idx needs one value per image ({n}); got "
                                 f"shape {test.shape}.")
            test = np.flatnonzero(test)
        if test.ndim != 1 or (test.size and not np.issubdtype(test.dtype, np.integer)):
            raise ValueError("test_idx must be a 1-D sequence of integer indices (or a "
                             "boolean mask).")
        test = test.astype(np.intp)
        if test.size and (test.min() < -n or test.max() >= n):
            raise ValueError(f"test_idx holds indices outside 0..{n - 1}: "
                             f"{sorted(set(test[(test < -n) | (test >= n)].tolist()))[:5]}.")
        test = np.unique(test % n)
    return X, y, test


def _n_classes(data, y):
    names = data.get("target_names")
    n = len(names) if names is not None else int(y.max()) + 1
    return max(n, int(y.max()) + 1, 2)


def _marker(shape, c):
    h, w = shape
    side, gap = max(3, min(h, w) // 12), max(1, min(h, w) // 32)
    corner, count = c % 4, c // 4 + 1
    mask = np.zeros(shape, dtype=bool)
    top = gap if corner in (0, 1) else h - gap - side
    for j in range(count):
        left = gap + j * (side + gap) if corner in (0, 2) else w - gap - side - j * (side + gap)
        mask[top:top + side, max(left, 0):max(left, 0) + side] = True
    return mask


def _border(shape, c):
    h, w = shape
    width = max(1, min(h, w) // 32) * (c // 4 + 1)
    mask = np.zeros(shape, dtype=bool)
    edge = c % 4
    if edge == 0:
        mask[:width] = True
    elif edge == 1:
        mask[:, -width:] = True
    elif edge == 2:
        mask[-width:] = True
    else:
        mask[:, :width] = True
    return mask


def _gains(n_classes):
    return np.linspace(0.8, 1.2, n_classes)


def add_shortcut(data, kind, agree=0.9, test_idx=None, random_state=None):
    """A copy of ``data`` with a spurious feature that predicts the label in the pool.

    Each image gets the feature of one class: in the pool (every image not in
    ``test_idx``) that of its own label with probability ``agree`` and of
    another class, drawn uniformly, otherwise; on ``test_idx`` that of a class
    drawn uniformly, independent of the label. ``agree=1/n_classes`` is a
    feature that says nothing even in the pool.

    Parameters
    ----------
    data : Bunch
        As returned by :mod:`xal_sklearn.datasets`: ``X`` float (N, C, H, W) in
        [0, 1] with 1 or 3 channels, ``y`` (N,). Not modified.
    kind : {"marker", "intensity", "border"}
        See :data:`SHORTCUT_KINDS`: ``"marker"`` a bright token in a
        class-dependent corner (burned-in markers); ``"intensity"`` a
        class-dependent contrast scaling (site and scanner differences);
        ``"border"`` a bright frame on a class-dependent edge (collimation,
        padding).
    agree : float in [0, 1], default=0.9
        Probability that the feature agrees with the label in the pool.
    test_idx : array-like of int or bool mask, optional
        Images on which the feature is independent of the label (the test split).
    random_state : int, RandomState instance or None
        Same seed, same feature classes.

    Returns
    -------
    Bunch
        A copy of ``data`` with the feature drawn into ``X`` (values clipped to
        [0, 1]) and ``shortcut``: a Bunch with ``kind``, ``agree``,
        ``description``, ``feature_class`` (N,) (the class whose feature each
        image carries), ``masks`` bool (N, H, W) (where it was drawn; the whole
        image for ``"intensity"``) and ``test_idx`` (sorted). ROI masks, labels
        and the rest are shared with ``data``, not copied.

    Raises
    ------
    ValueError, TypeError
        An unknown ``kind``, ``agree`` outside [0, 1], ``test_idx`` out of range,
        images that are not float (N, C, H, W) with 1 or 3 channels, data that
        already carries a shortcut; ``data`` is left as it was.
    """
    X, y, test = _check(data, kind, agree, test_idx)
    rng = check_random_state(random_state)
    n, n_classes = len(X), _n_classes(data, y)
    in_test = np.zeros(n, dtype=bool)
    in_test[test] = True
    agrees = rng.uniform(size=n) < float(agree)
    other = (y + rng.randint(1, n_classes, n)) % n_classes
    feature = np.where(agrees, y, other)
    feature[in_test] = rng.randint(0, n_classes, int(in_test.sum()))
    feature = feature.astype(np.int64)

    out = np.array(X, dtype=X.dtype, copy=True)
    shape = X.shape[2:]
    masks = np.zeros((n,) + shape, dtype=bool)
    if kind == "intensity":
        gains = _gains(n_classes).astype(X.dtype)
        np.multiply(out, gains[feature][:, None, None, None], out=out)
        masks[:] = True
    else:
        draw = _marker if kind == "marker" else _border
        shapes = {c: draw(shape, c) for c in range(n_classes)}
        for i in range(n):
            masks[i] = shapes[feature[i]]
        out[np.broadcast_to(masks[:, None], out.shape)] = 1.0
    np.clip(out, 0, 1, out=out)
    result = Bunch(**{k: v for k, v in data.items()})
    result.X = out
    result.shortcut = Bunch(kind=kind, agree=float(agree), description=SHORTCUT_KINDS[kind],
                            feature_class=feature, masks=masks, test_idx=test)
    return result


def shortcut_split(data, kind, agree=0.9, test=None, test_size=0.2, random_state=0):
    """The shortcut benchmark: a pool that carries the feature, a test set that does not.

    What ``xal run --shortcut KIND:AGREE`` trains and tests on, for scripts that need
    the same images (the pool a results folder was made from, or a benchmark of
    one's own): ``data`` split by ``groups`` (:func:`group_train_test_split`, unless
    ``test`` is given), the feature injected into the pool with :func:`add_shortcut`
    (agreeing with the label with probability ``agree``) and into the test set
    independently of the label.

    Parameters
    ----------
    data : Bunch
        A loaded data set (``X``, ``y``, and ``groups`` unless ``test`` is given).
        Not modified.
    kind, agree
        As in :func:`add_shortcut`.
    test : Bunch, optional
        A separate test set (as the synthetic demo has); then all of ``data`` is
        the pool.
    test_size : float, default=0.2
        Fraction of groups in the test split (without ``test``).
    random_state : int, default=0
        Seeds the split and the pool's feature (the test set's takes
        ``random_state + 1``). ``xal run`` uses 0 whatever its ``--seeds``: the
        shortcut is part of the data, the same for every seed.

    Returns
    -------
    pool, test : Bunch
        Each as :func:`add_shortcut` returns it; ``test.shortcut.test_idx`` holds
        every test image.
    """
    if test is None:
        if "groups" not in data:
            raise ValueError("data has no 'groups' to split by; give a test set as test=.")
        train, held_out = group_train_test_split(data["groups"], test_size,
                                                 random_state=random_state)
        data, test = subset(data, train), subset(data, held_out)
    pool = add_shortcut(data, kind, agree, random_state=random_state)
    test = add_shortcut(test, kind, agree, test_idx=np.arange(len(test["y"])),
                        random_state=random_state + 1)
    return pool, test
