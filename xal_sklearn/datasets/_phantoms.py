"""Synthetic lesion phantoms: the dataset that ships with the package."""

import numbers

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.utils import Bunch, check_random_state

LESION_TYPES = ("solid", "ring", "lobulated")

DESCR = """Synthetic lesion phantoms (xal_sklearn.datasets.make_lesion_phantoms)

SYNTHETIC DATA -- not medical images. Each image is a head-like ellipse with
smooth tissue texture, a bright rim and Gaussian noise, holding one lesion at a
random position. The lesion's appearance depends on the class (cycling through
solid blob, ring-enhancing rim with dark core, lobulated mottled mass; classes
beyond three are elongated variants), and ``roi_masks`` is its exact extent.

With ``shortcut > 0`` a bright marker (like the hospital tags and laterality
letters chest X-ray models latch onto) sits in a corner; its identity (which
corner, how many squares) equals the label with probability ``shortcut`` and is
another class otherwise. A model can then score well while looking at the
marker instead of the lesion: the case attention-guided selection is for.
``marker_masks`` / ``marker_class`` say where the marker is and what it claims.
"""


def _check_unit(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
    return float(value)


def make_lesion_phantoms(n_samples=300, image_size=64, n_classes=3, shortcut=0.0,
                         noise=0.03, random_state=None):
    """Synthetic brain-scan-like images with one class-specific lesion and its ROI.

    Parameters
    ----------
    n_samples : int, default=300
    image_size : int, default=64
        Images are ``image_size`` x ``image_size`` (at least 32).
    n_classes : int, default=3
        2 to 8 classes, balanced (labels cycle, then are shuffled).
    shortcut : float in [0, 1], default=0.0
        Probability that the corner marker agrees with the label; 0 draws no
        marker at all (use it for a test set without the shortcut).
    noise : float, default=0.03
        Standard deviation of the additive Gaussian noise.
    random_state : int, RandomState instance or None
        Same seed, same data.

    Returns
    -------
    Bunch
        ``X`` float32 (n, 1, size, size) in [0, 1]; ``y`` int64; ``target_names``;
        ``roi_masks`` bool (n, size, size); ``roi_available`` bool (n,), all True;
        ``groups`` (one subject per image); ``filenames`` (synthetic ids);
        ``marker_masks`` bool (n, size, size); ``marker_class`` int64 (n,), -1
        without marker; ``DESCR``.
    """
    if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if not isinstance(image_size, numbers.Integral) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}.")
    if not isinstance(n_classes, numbers.Integral) or not 2 <= n_classes <= 8:
        raise ValueError(f"n_classes must be an integer from 2 to 8, got {n_classes!r}.")
    shortcut = _check_unit(shortcut, "shortcut")
    rng = check_random_state(random_state)
    n, s = int(n_samples), int(image_size)

    y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) / s

    # head: an ellipse of smooth tissue texture with a brighter rim
    texture = gaussian_filter(rng.standard_normal((n, s, s)), sigma=(0, s / 24, s / 24))
    texture /= texture.reshape(n, -1).std(axis=1)[:, None, None]
    cy, cx = 0.5 + rng.uniform(-0.03, 0.03, (2, n, 1, 1))
    ry, rx = rng.uniform(0.40, 0.45, (n, 1, 1)), rng.uniform(0.34, 0.40, (n, 1, 1))
    rho = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    head = rho < 1
    X = np.where(head, 0.35 + 0.06 * texture, 0.02)
    X += 0.35 * np.exp(-(((rho - 0.97) / 0.03) ** 2))

    # lesion: class-specific appearance at a random position inside the head
    radius = rng.uniform(0.07, 0.12, n) * (1 + 0.15 * (y >= 3))
    angle = rng.uniform(0, 2 * np.pi, n)
    dist = rng.uniform(0, 0.45, n)
    ly = cy[:, 0, 0] + dist * ry[:, 0, 0] * np.sin(angle)
    lx = cx[:, 0, 0] + dist * rx[:, 0, 0] * np.cos(angle)
    roi = np.zeros((n, s, s), dtype=bool)
    lesion_noise = gaussian_filter(rng.standard_normal((n, s, s)), sigma=(0, 1.0, 1.0))
    for i in range(n):
        kind, variant = y[i] % 3, y[i] // 3
        dy, dx = yy - ly[i], xx - lx[i]
        stretch = 1.0 + 0.6 * variant
        theta = rng.uniform(0, np.pi)
        u = dy * np.cos(theta) + dx * np.sin(theta)
        v = -dy * np.sin(theta) + dx * np.cos(theta)
        r = np.sqrt((u * stretch) ** 2 + (v / stretch) ** 2) / radius[i]
        if kind == 2:  # lobulated outline
            phi = np.arctan2(v, u)
            lobes = 1 + 0.25 * np.sin(3 * phi + rng.uniform(0, 2 * np.pi)) \
                + 0.15 * np.sin(5 * phi + rng.uniform(0, 2 * np.pi))
            r = r / lobes
        inside = r < 1
        edge = 1 / (1 + np.exp((r - 1) * 12))  # soft boundary
        if kind == 0:
            X[i] += 0.40 * edge
        elif kind == 1:
            X[i] += 0.50 * np.exp(-(((r - 0.8) / 0.18) ** 2)) - 0.18 * (r < 0.55)
        else:
            X[i] += edge * (0.22 + 0.12 * lesion_noise[i])
        roi[i] = inside & head[i]

    # spurious marker in a corner
    marker_class = np.full(n, -1, dtype=np.int64)
    marker = np.zeros((n, s, s), dtype=bool)
    if shortcut > 0:
        agree = rng.uniform(size=n) < shortcut
        other = (y + rng.randint(1, n_classes, n)) % n_classes
        marker_class = np.where(agree, y, other)
        side, gap = max(3, s // 12), max(1, s // 32)
        for i in range(n):
            corner, count = marker_class[i] % 4, marker_class[i] // 4 + 1
            top = gap if corner in (0, 1) else s - gap - side
            for j in range(count):
                left = gap + j * (side + gap) if corner in (0, 2) \
                    else s - gap - side - j * (side + gap)
                marker[i, top:top + side, left:left + side] = True
        X = np.where(marker, 0.95, X)

    X = X + noise * rng.standard_normal((n, s, s))
    X = np.clip(X, 0, 1).astype(np.float32)[:, None]
    return Bunch(
        X=X, y=y, roi_masks=roi, roi_available=roi.reshape(n, -1).any(axis=1),
        groups=np.arange(n), filenames=np.array([f"phantom_{i:05d}" for i in range(n)]),
        target_names=np.array([f"{LESION_TYPES[k % 3]}{'' if k < 3 else '_elongated'}"
                               + ("" if k < 6 else "_2") for k in range(n_classes)]),
        marker_masks=marker, marker_class=marker_class, DESCR=DESCR,
    )
