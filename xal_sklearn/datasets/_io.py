"""Reading single images: PNG/JPEG/BMP/TIFF (Pillow), DICOM (pydicom), NIfTI (nibabel)."""

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .._names import RESIZE_MODES

__all__ = ["RESIZE_MODES", "check_resize_mode", "hash_file_stats", "read_dicom", "read_image",
           "read_mask", "resize_image", "resize_mask", "split_mask_field", "DataLoadError"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


class DataLoadError(ValueError):
    """A file or manifest row could not be loaded; the message names which."""


def is_dicom(path):
    return str(path).lower().endswith(".dcm")


def is_nifti(path):
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def _voi_bounds(ds, apply_voi_lut, index):
    # The output range of a VOI transform is what it maps -inf/+inf inputs to.
    probe = apply_voi_lut(np.array([-1e12, 1e12]), ds, index=index)
    return float(np.min(probe)), float(np.max(probe))


def read_dicom(path, window="header", frame=None, window_index=0):
    """Read a DICOM image as float32 in [0, 1], as a radiologist would see it.

    Steps: decode the pixel data (pydicom; compressed transfer syntaxes that
    pydicom can decode with the installed handlers), apply the modality LUT
    (rescale slope / intercept), apply the VOI transform, scale to [0, 1] and
    invert MONOCHROME1 so that bright always means dense.

    Parameters
    ----------
    path : str or path-like
    window : "header", (center, width) or None, default="header"
        "header" uses the file's VOI LUT or window (the ``window_index``-th if
        there are several) and falls back to the full range when it has none;
        a (center, width) pair replaces the file's window, applied with the
        DICOM linear function (PS3.3 C.11.2.1.2); None maps the full range of
        values to [0, 1].
    frame : int, optional
        For multi-frame files, return only this frame.

    Returns
    -------
    ndarray of float32
        (H, W), (frames, H, W) for multi-frame files, or (H, W, 3) for colour.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:
        raise DataLoadError(f"Could not read DICOM file {path}: {exc}") from exc
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frame is not None and not 0 <= frame < n_frames:
        raise DataLoadError(f"{path} has {n_frames} frame(s); frame={frame} is out of range.")
    # the whole file is scaled at once, so that frames stay comparable
    arr = _to_unit_range(ds, pixels, window, window_index)
    return arr[frame] if frame is not None and n_frames > 1 else arr


def _to_unit_range(ds, pixels, window, window_index):
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if getattr(ds, "SamplesPerPixel", 1) > 1:  # colour: no modality / VOI transforms
        return _minmax(pixels.astype(np.float64)).astype(np.float32)
    arr = apply_modality_lut(pixels, ds).astype(np.float64)
    if window is not None and not (isinstance(window, str) and window == "header"):
        try:
            center, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ValueError(
                f"window must be 'header', None or (center, width); got {window!r}.") from None
        if width <= 1:
            raise ValueError(f"window width must be > 1, got {width}.")
        # the given window replaces the file's, through the same DICOM linear function
        if "VOILUTSequence" in ds:
            del ds.VOILUTSequence
        ds.WindowCenter, ds.WindowWidth, window_index = center, width, 0
        ds.VOILUTFunction = "LINEAR"
    if window is not None and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        lo, hi = _voi_bounds(ds, apply_voi_lut, window_index)
        arr = (apply_voi_lut(arr, ds, index=window_index) - lo) / (hi - lo)
    else:  # no window asked for, or none in the file: the full range
        arr = _minmax(arr)
    arr = np.clip(arr, 0, 1)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = 1 - arr
    return arr.astype(np.float32)


def _minmax(arr):
    lo, hi = float(np.min(arr)), float(np.max(arr))
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr, dtype=np.float64)


def read_image(path, as_gray=True, frame=None):
    """Read one image file as float32 ``(C, H, W)`` in [0, 1].

    PNG, JPEG, BMP and TIFF go through Pillow: 8-bit images are divided by
    255 and 16-bit ones by 65535 (so relative intensities between images are
    kept). ``as_gray=True`` gives one channel (RGB by ITU-R 601 luma, alpha
    dropped); ``as_gray=False`` gives three (grayscale repeated, alpha
    dropped). ``.dcm`` files go through :func:`read_dicom` (frame 0 of a
    multi-frame file unless ``frame`` is given) and ``.nii``/``.nii.gz``
    files must hold a single 2-D slice.
    """
    path = os.fspath(path)
    if is_dicom(path):
        arr = read_dicom(path, frame=0 if frame is None else frame)
        # one frame: (H, W), or (H, W, 3) for colour
        arr = np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr[None]
        return _channels(arr, as_gray)
    if is_nifti(path):
        import nibabel as nib

        try:
            data = np.asarray(nib.load(path).get_fdata(dtype=np.float32)).squeeze()
        except Exception as exc:
            raise DataLoadError(f"Could not read NIfTI file {path}: {exc}") from exc
        if data.ndim != 2:
            raise DataLoadError(f"{path} holds a {data.ndim}-D volume; use load_nifti_slices.")
        return _channels(_minmax(data)[None].astype(np.float32), as_gray)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _pil_to_array(img)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DataLoadError(f"Could not read image file {path}: {exc}") from exc
    return _channels(arr, as_gray)


def _pil_to_array(img):
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[None]
    if mode == "I":  # 32-bit integer: 16-bit PNGs often open this way
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return (arr / top).astype(np.float32)[None]
    if mode == "F":
        return _minmax(np.asarray(img, dtype=np.float64)).astype(np.float32)[None]
    if mode in ("1", "L", "P"):
        img = img.convert("L") if mode != "L" else img
        return (np.asarray(img, dtype=np.float32) / 255.0)[None]
    if mode in ("LA", "PA"):
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[None]
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return np.moveaxis(rgb, -1, 0)


def _channels(arr, as_gray):
    """(C, H, W) with C in {1, 3} -> 1 channel (as_gray) or 3."""
    if as_gray:
        if arr.shape[0] == 3:
            w = np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]
            return (arr * w).sum(0, keepdims=True)
        return arr
    return np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr


def check_resize_mode(mode):
    """Refuse an unknown ``resize`` mode, naming the choices."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}; got {mode!r}.")
    return mode


def _fitted(shape, size, mode):
    """``(scaled (h, w), offset (y, x))``: the size the image is scaled to and where the
    target's window starts in it (negative: the image sits that far inside the target)."""
    (ih, iw), (h, w) = shape, size
    if mode == "stretch":
        return (h, w), (0, 0)
    scale = (min if mode == "pad" else max)(h / ih, w / iw)
    sh, sw = max(1, round(ih * scale)), max(1, round(iw * scale))
    return (sh, sw), ((sh - h) // 2, (sw - w) // 2)


def _window(plane, size, offset, fill):
    """The ``size`` window of ``plane`` starting at ``offset``, ``fill`` outside it."""
    (h, w), (oy, ox) = size, offset
    out = np.full((h, w), fill, dtype=plane.dtype)
    ys, xs = slice(max(oy, 0), min(oy + h, plane.shape[0])), slice(max(ox, 0),
                                                                   min(ox + w, plane.shape[1]))
    out[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox] = plane[ys, xs]
    return out


def resize_image(arr, size, mode="stretch"):
    """Resize (C, H, W) float images to ``size`` = (H, W), bilinear.

    ``mode``: "stretch" scales each axis to the target (the aspect ratio changes); "pad"
    scales the whole image to fit inside and fills the rest with 0 (black, centred);
    "crop" scales it to cover the target and cuts the overhang off both sides.
    """
    check_resize_mode(mode)
    if arr.shape[1:] == tuple(size):
        return arr
    scaled, offset = _fitted(arr.shape[1:], size, mode)
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32))
                         .resize(scaled[::-1], Image.BILINEAR)) for c in arr]
    return np.stack([_window(p, size, offset, 0.0) for p in planes])


def resize_mask(mask, size, mode="stretch"):
    """Nearest-neighbour resize of an (H, W) bool mask to ``size`` = (H, W), by the same
    ``mode`` as :func:`resize_image`, so that mask and image stay aligned."""
    check_resize_mode(mode)
    if mask.shape == tuple(size):
        return mask
    scaled, offset = _fitted(mask.shape, size, mode)
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize(scaled[::-1], Image.NEAREST)
    return _window(np.asarray(img) > 0, size, offset, False)


#: Separates several mask files in one manifest cell (one file per finding).
MASK_SEPARATOR = ";"


def hash_file_stats(h, root, names):
    """Feed each file's name, size and modification time under ``root`` to the hash ``h``
    (``name:missing`` for a file that is not there; empty names skipped): a cache keyed by
    the digest is rebuilt when any of its files changes."""
    for name in names:
        if not name:
            continue
        try:
            st = (Path(root) / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{name}:missing;".encode())


def split_mask_field(value):
    """The mask file names of a manifest cell: ``"a.png; b.png"`` -> ``["a.png", "b.png"]``."""
    return [part.strip() for part in (value or "").split(MASK_SEPARATOR) if part.strip()]


def read_mask(paths, shape=None):
    """The union (logical OR) of the mask images ``paths``: nonzero pixels are ROI.

    Parameters
    ----------
    paths : path-like or sequence of path-like
        One mask file, or several (one per finding) of the same size.
    shape : (height, width), optional
        The image's size; every mask must have it.

    Raises
    ------
    DataLoadError
        Naming the file: unreadable, holding NaN, or of another size.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    union = None
    for path in paths:
        values = read_image(path, as_gray=True)[0]
        if np.isnan(values).any():
            raise DataLoadError(f"mask {path} contains NaN values.")
        mask = values > 0
        expected = shape if shape is not None else (None if union is None else union.shape)
        if expected is not None and mask.shape != tuple(expected):
            raise DataLoadError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but "
                                f"{'the image' if shape is not None else 'the other masks'} "
                                f"{'is' if shape is not None else 'are'} "
                                f"{expected[1]}x{expected[0]}.")
        union = mask if union is None else union | mask
    if union is None:
        raise DataLoadError("no mask file given.")
    return union
