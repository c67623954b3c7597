"""Manifest-driven loading of image folders (PNG/JPEG/BMP/TIFF, DICOM, NIfTI slices)."""

import csv
import hashlib
import json
import numbers
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils import Bunch

from ._boxes import _box_mask, parse_siim_boxes, read_vindr_boxes
from ._coco import check_coco_matches, read_coco
from ._io import (DataLoadError, check_resize_mode, hash_file_stats, read_image, read_mask,
                  resize_image, resize_mask, split_mask_field)

__all__ = ["load_image_folder", "default_cache_dir"]

#: 2: images and masks are written to ``.npy`` files as they are decoded and mapped
#: (``mmap_mode="r"``) when read back; ``meta.json`` records the shapes it must find.
_CACHE_VERSION = 2
#: Build folders (``.tmp-*``) older than this are what a killed build left: removed.
_STALE_BUILD_SECONDS = 24 * 3600
_ARRAYS = ("X", "y", "roi_masks", "roi_available")


def default_cache_dir():
    """``$XAL_SKLEARN_CACHE``, else ``~/.cache/xal_sklearn``."""
    return Path(os.environ.get("XAL_SKLEARN_CACHE", Path.home() / ".cache" / "xal_sklearn"))


def _size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral):
        image_size = (image_size, image_size)
    h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}.")
    return h, w


def _read_manifest(manifest):
    try:
        # utf-8-sig: Excel's "CSV UTF-8" export starts with a byte-order mark
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataLoadError(f"Could not read manifest {manifest}: {exc}") from exc
    missing = {"image", "label"} - set(columns)
    if missing:
        raise DataLoadError(f"Manifest {manifest} lacks column(s) {sorted(missing)}; "
                            f"it has {columns}.")
    if not rows:
        raise DataLoadError(f"Manifest {manifest} has no rows.")
    return rows


def _class_list(labels, classes):
    if classes is not None:
        return [str(c) for c in classes]
    unique = sorted(set(labels))
    try:
        return sorted(unique, key=int)
    except ValueError:
        return unique


def _inside(root, name, where, what, allow_outside_root):
    """``root / name``, refusing a path that leaves the data folder unless allowed."""
    path = root / name
    if not allow_outside_root:
        resolved, top = path.resolve(), root.resolve()
        if Path(name).is_absolute() or not resolved.is_relative_to(top):
            raise DataLoadError(f"{where}: {what} path {name!r} is outside the data folder "
                                f"{root}; pass allow_outside_root=True if that is intended.")
    return path


def _load_row(root, row, line, manifest, size, as_gray, vindr, class_index,
              allow_outside_root=False, coco=None, resize="stretch"):
    where = f"{manifest}, line {line}"
    label = (row.get("label") or "").strip()
    if not label:
        raise DataLoadError(f"{where}: blank label; every row needs a class (leave unlabelled "
                            "images out of the manifest).")
    if label not in class_index:
        raise DataLoadError(f"{where}: unknown label {label!r}; classes are {list(class_index)}.")
    image_name = (row.get("image") or "").strip()
    image_path = _inside(root, image_name, where, "image", allow_outside_root)
    if not image_name or not image_path.is_file():
        raise DataLoadError(f"{where}: image file {image_path} does not exist.")
    frame = row.get("frame", "").strip()
    try:
        img = read_image(image_path, as_gray=as_gray, frame=int(frame) if frame else None)
    except DataLoadError as exc:
        raise DataLoadError(f"{where}: {exc}") from exc
    shape = img.shape[1:]
    mask_names = split_mask_field(row.get("mask"))
    available = True
    if mask_names:  # several files (one per finding): the ROI is their union
        mask_paths = [_inside(root, name, where, "mask", allow_outside_root)
                      for name in mask_names]
        for mask_path in mask_paths:
            if not mask_path.is_file():
                raise DataLoadError(f"{where}: mask file {mask_path} does not exist.")
        try:
            mask = read_mask(mask_paths, shape)
        except DataLoadError as exc:
            raise DataLoadError(f"{where}: {str(exc).rstrip('.')} (image {image_path}).") from exc
    elif (row.get("boxes") or "").strip():
        mask = _box_mask(parse_siim_boxes(row["boxes"]), shape)
    elif coco is not None:  # in the COCO file: annotated (maybe empty); absent: not annotated
        image = coco.image_for(image_name)
        if image is None:
            mask, available = np.zeros(shape, dtype=bool), False
        else:
            mask = coco.mask(image, shape)
    elif vindr is not None and _image_id(row) in vindr:
        mask = _box_mask(vindr[_image_id(row)], shape)
    else:
        mask, available = np.zeros(shape, dtype=bool), False
    if size is not None:
        img, mask = resize_image(img, size, resize), resize_mask(mask, size, resize)
    return img, mask, available, class_index[label]


def _image_id(row):
    return (row.get("image_id") or "").strip() or Path(row["image"].strip()).name.split(".")[0]


def _cache_key(manifest, rows, root, params):
    h = hashlib.sha256()
    h.update(Path(manifest).read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for row in rows:  # any changed file invalidates the cache
        hash_file_stats(h, root, [(row.get("image") or "").strip()]
                        + split_mask_field(row.get("mask")))
    return h.hexdigest()[:24]


def _load_cache(folder):
    """The cached Bunch with ``X`` and ``roi_masks`` mapped from disk, or None when the
    folder is missing, from another build, or damaged (a truncated file, shapes that do
    not match ``meta.json``): such a cache is rebuilt, never read as data."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {k: np.load(folder / f"{k}.npy", allow_pickle=False,
                             mmap_mode="r" if k in ("X", "roi_masks") else None)
                  for k in _ARRAYS}
        shapes = {k: list(arrays[k].shape) for k in _ARRAYS}
        if shapes != meta["shapes"] or len(meta["filenames"]) != shapes["y"][0]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Bunch(**arrays, target_names=np.array(meta["target_names"]),
                 groups=_as_ids(meta["groups"]), filenames=np.array(meta["filenames"]))


def _remove_stale_builds(parent):
    """Build folders a killed process left behind (they are never read)."""
    import time

    for old in parent.glob(".tmp-*"):
        try:
            if time.time() - old.stat().st_mtime > _STALE_BUILD_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue


class _Rows:
    """Decoded rows written straight into arrays (``.npy`` files under ``folder`` when
    caching, else memory), so a pool larger than memory never is in memory whole."""

    def __init__(self, n, folder=None, manifest=None):
        self.n, self.folder, self.manifest, self.X = n, folder, manifest, None
        self.kept, self.y, self.available = [], [], []

    def _array(self, name, shape, dtype):
        if self.folder is None:
            return np.empty(shape, dtype=dtype)
        return np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype,
                                         shape=shape)

    def add(self, i, image, mask, available, label):
        if self.X is None:
            self.X = self._array("X", (self.n,) + image.shape, np.float32)
            self.masks = self._array("roi_masks", (self.n,) + mask.shape, bool)
        elif image.shape != self.X.shape[1:]:
            raise DataLoadError(
                f"Images in {self.manifest} have different sizes "
                f"{sorted({self.X.shape[1:], image.shape})}...; pass image_size to resize "
                "them.")
        k = len(self.kept)  # rows are packed as they come: skipped ones leave no gap
        self.X[k], self.masks[k] = image, mask
        self.kept.append(i)
        self.y.append(label)
        self.available.append(available)

    def finish(self):
        """``(X, roi_masks)`` of the kept rows (files rewritten to their length)."""
        m = len(self.kept)
        if m == self.n:
            return self.X, self.masks
        if self.folder is None:
            return self.X[:m].copy(), self.masks[:m].copy()
        out = []
        for name, full in (("X", self.X), ("roi_masks", self.masks)):
            part = np.lib.format.open_memmap(self.folder / f"{name}.part.npy", mode="w+",
                                             dtype=full.dtype, shape=(m,) + full.shape[1:])
            for start in range(0, m, 256):  # in chunks: memory stays flat
                stop = min(start + 256, m)
                part[start:stop] = full[start:stop]
            part.flush()
            del full
            out.append(part)
        self.X = self.masks = None
        for name in ("X", "roi_masks"):
            os.replace(self.folder / f"{name}.part.npy", self.folder / f"{name}.npy")
        return out[0], out[1]


def _as_ids(values):
    """Group ids as integers when they all are, else strings."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array(values)


def load_image_folder(root, manifest="labels.csv", image_size=None, as_gray=True, classes=None,
                      boxes=None, on_error="raise", n_jobs=None, cache=True, cache_dir=None,
                      progress=None, allow_outside_root=False, coco=None, roi_categories=None,
                      resize="crop"):
    """Load a folder of images with labels and ROIs described by a CSV manifest.

    Parameters
    ----------
    root : str or path-like
        Folder the manifest's paths are relative to.
    manifest : str or path-like, default="labels.csv"
        CSV (relative to ``root`` unless absolute) with columns ``image`` and
        ``label``, and optionally ``mask`` (a mask image: nonzero = ROI),
        ``group`` (patient or study id), ``boxes`` (SIIM-COVID-19 style list of
        ``{x, y, width, height}``), ``image_id`` (key into ``boxes`` CSV) and
        ``frame`` (frame of a multi-frame DICOM). Images may be PNG, JPEG, BMP,
        TIFF (8/16 bit, gray/RGB/RGBA), DICOM (``.dcm``, see
        :func:`read_dicom`) or 2-D NIfTI; formats may be mixed.
    image_size : int or (height, width), optional
        Resize images (bilinear) and masks (nearest). Without it all images
        must have the same size.
    resize : {"crop", "stretch", "pad"}, default="crop"
        How ``image_size`` meets an image of another aspect ratio, masks alike:
        "crop" covers the target and cuts the overhang off both sides (what
        lies there is lost, a lesion at the edge included), "stretch" scales
        each axis to the target (shapes are distorted; what earlier versions
        did), "pad" fits the whole image inside and fills the rest with black.
        Square images are the same under all three. On validation groups of
        breast ultrasound (300 labels, 5 seeds) "crop" beat "stretch" by 2.3
        accuracy points [+1.0, +3.8] and "pad" lost 3.1 [-5.3, -1.0]
        (``research/probe_resize_class_weight.py``).
    as_gray : bool, default=True
        One channel (RGB by luma, alpha dropped) or three (gray repeated).
    classes : sequence of str, optional
        Label order; default the sorted labels (numerically if all integers).
    boxes : str or path-like, optional
        Relative to ``root`` unless absolute, like ``manifest``. VinDr-CXR style box CSV (``image_id, class_name, x_min, y_min, x_max,
        y_max``); ``image_id`` is the manifest's ``image_id`` column or the
        image file name without extension. An image listed there with no box
        ("No finding") is annotated without lesion: ``roi_available`` True,
        empty mask.
    on_error : {"raise", "skip"}, default="raise"
        A bad row (missing or unreadable file, unknown label, mask of another
        size) raises an error naming the file and line, or is skipped with
        one warning that counts the skipped rows.
    n_jobs : int, optional
        Threads reading files (joblib); None means 1, -1 all cores.
    cache : bool, default=True
        Write the arrays to ``cache_dir`` as the images are decoded (threads
        decode ahead of the writing) and return ``X`` and ``roi_masks``
        mapped from there (read-only :class:`numpy.memmap`), so a pool larger
        than memory loads with flat memory (a 4,800-image pool at 96 px: the
        heap grew 3 MiB, against 213 MiB without the cache); a second call
        with the same manifest, files and parameters maps them in
        milliseconds. Any change to the manifest, a file's size or mtime, or
        a parameter builds anew. The build happens in a temporary folder that
        replaces the cache only when complete, so an interrupted build leaves
        nothing that could be read (what a killed one leaves is removed a day
        later); a cache whose files do not match the shapes it recorded
        (a truncated copy) is rebuilt. ``.npy`` files rather than a chunked
        store (zarr): no dependency, and row access is what training and
        scoring do. ``cache=False`` builds the arrays in memory.
    cache_dir : path-like, optional
        Default :func:`default_cache_dir`.
    progress : bool or None
        tqdm progress bar (None: only on a terminal).
    allow_outside_root : bool, default=False
        Image and mask paths must stay inside ``root`` (no ``..``, no absolute
        paths), so a manifest from elsewhere cannot read arbitrary files;
        True lifts that rule.
    coco : str or path-like, optional
        A COCO annotation file (relative to ``root`` unless absolute), as CVAT,
        Label Studio and most public sets export. Images are matched by
        ``file_name`` (the manifest's path, else the file name alone when it is
        unique); the ROI is the union of the selected categories' polygons and
        RLE masks, and of the boxes of annotations that have only a ``bbox``.
        An image listed in the file with no such annotation is annotated without
        lesion (``roi_available`` True, empty mask); an image the file does not
        list is not annotated (``roi_available`` False). A ``mask`` or
        ``boxes`` cell of a row takes precedence. The whole file is checked
        before any image is read: a file that does not parse, an annotation of
        an image the manifest lacks, a polygon outside its image, an RLE of
        another size, an unknown category raise :class:`DataLoadError` naming
        the annotation id.
    roi_categories : str, int or sequence of them, optional
        COCO categories (names or ids) that form the ROI; default all.

    Manifest rules: UTF-8 with or without a byte-order mark; a blank label is
    an error naming its line (unlabelled images are left out of a training
    manifest); a mask holding NaN is refused.

    Returns
    -------
    Bunch
        ``X`` float32 (N, C, H, W) in [0, 1] (mapped from the cache, see
        ``cache``); ``y`` int64 indices into
        ``target_names``; ``roi_masks`` bool (N, H, W); ``roi_available`` bool
        (N,), False where nobody annotated the image (no mask, no boxes);
        ``groups`` (the ``group`` column, else one group per image);
        ``filenames`` (image paths as in the manifest).
    """
    from tqdm.auto import tqdm

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    root = Path(root)
    if not root.is_dir():
        raise DataLoadError(f"Data folder {root} does not exist.")
    manifest = Path(manifest)
    manifest = manifest if manifest.is_absolute() else root / manifest
    size = _size(image_size)
    check_resize_mode(resize)
    if boxes is not None:
        boxes = Path(boxes) if Path(boxes).is_absolute() else root / boxes
    if coco is not None:
        coco = Path(coco) if Path(coco).is_absolute() else root / coco
    rows = _read_manifest(manifest)
    target_names = _class_list([(r["label"] or "").strip() for r in rows
                                if (r["label"] or "").strip()], classes)
    class_index = {c: i for i, c in enumerate(target_names)}
    params = dict(version=_CACHE_VERSION, size=size, as_gray=as_gray, classes=target_names,
                  on_error=on_error, allow_outside_root=allow_outside_root, boxes=None if boxes is None else str(Path(boxes).resolve()),
                  boxes_bytes=None if boxes is None or not Path(boxes).is_file()
                  else hashlib.sha256(Path(boxes).read_bytes()).hexdigest(),
                  coco_bytes=None if coco is None or not coco.is_file()
                  else hashlib.sha256(coco.read_bytes()).hexdigest(),
                  roi_categories=None if roi_categories is None else repr(roi_categories))
    if resize != "stretch":  # only then: caches of earlier versions keep their keys
        params["resize"] = resize
    if cache:
        folder = Path(cache_dir or default_cache_dir()) / _cache_key(manifest, rows, root, params)
        cached = _load_cache(folder)
        if cached is not None:
            return cached
        if folder.exists():  # damaged (a truncated file, a killed copy): rebuilt
            shutil.rmtree(folder, ignore_errors=True)
    vindr = read_vindr_boxes(boxes) if boxes is not None else None
    if coco is not None:  # checked whole before any image is read
        coco = read_coco(coco, roi_categories)
        check_coco_matches(coco, [(r.get("image") or "").strip() for r in rows])

    def task(line, row):
        try:
            return _load_row(root, row, line, manifest, size, as_gray, vindr, class_index,
                             allow_outside_root, coco, resize)
        except (DataLoadError, ValueError) as exc:
            if on_error == "raise":
                raise DataLoadError(str(exc) if str(manifest) in str(exc)
                                    else f"{manifest}, line {line}: {exc}") from exc
            return exc

    build = None
    if cache:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(folder.parent)
        build = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        rows_out = _Rows(len(rows), build, manifest)
        errors, groups, names = [], [], []
        # decoding runs in threads ahead of the writing, in the manifest's order
        results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
            delayed(task)(line, row) for line, row in enumerate(rows, start=2))
        for i, (row, r) in enumerate(zip(rows, tqdm(
                results, total=len(rows), desc="Loading images", leave=False,
                disable=None if progress is None else not progress))):
            if isinstance(r, Exception):
                errors.append(r)
                continue
            rows_out.add(i, r[0], r[1], r[2], r[3])
            groups.append((row.get("group") or "").strip() or f"row{i}")
            names.append(row["image"].strip())
        if errors:
            warnings.warn(f"Skipped {len(errors)} of {len(rows)} manifest rows of {manifest}; "
                          f"first: {errors[0]}", stacklevel=2)
        if not rows_out.kept:
            raise DataLoadError(f"No row of {manifest} could be loaded.")
        X, masks = rows_out.finish()
        bunch = Bunch(X=X, y=np.array(rows_out.y, dtype=np.int64), roi_masks=masks,
                      roi_available=np.array(rows_out.available, dtype=bool),
                      target_names=np.array(target_names), groups=_as_ids(groups),
                      filenames=np.array(names))
        if build is None:
            return bunch
        for key in ("y", "roi_available"):
            np.save(build / f"{key}.npy", bunch[key])
        for key in ("X", "roi_masks"):
            bunch[key].flush()
        meta = {k: [str(v) for v in bunch[k]] for k in ("target_names", "groups", "filenames")}
        meta["shapes"] = {k: list(bunch[k].shape) for k in _ARRAYS}
        (build / "meta.json").write_text(json.dumps(meta))  # last: the build is complete
        del X, masks, bunch, rows_out
        try:
            os.replace(build, folder)  # atomic: a half-written cache is never seen
        except OSError:  # another process finished the same cache first
            pass
    finally:
        if build is not None and build.exists():
            shutil.rmtree(build, ignore_errors=True)
    loaded = _load_cache(folder)
    if loaded is None:
        raise DataLoadError(f"The cache {folder} could not be read back after it was written.")
    return loaded
