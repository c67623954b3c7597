"""BraTS-style NIfTI volumes with segmentation volumes -> labelled 2-D slices."""

import numbers
import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._io import DataLoadError, resize_image, resize_mask

__all__ = ["load_nifti_slices"]


def _load_canonical(path):
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(os.fspath(path)))
        return img, np.asarray(img.dataobj)
    except FileNotFoundError:
        raise DataLoadError(f"NIfTI file {path} does not exist.") from None
    except Exception as exc:
        raise DataLoadError(f"Could not read NIfTI file {path}: {exc}") from exc


def _normalise(volume, percentiles):
    """Clip to percentiles of the non-zero voxels (the head), scale to [0, 1]."""
    vol = volume.astype(np.float32)
    body = vol[vol != 0]
    if body.size == 0:
        return np.zeros_like(vol)
    lo, hi = np.percentile(body, percentiles)
    if hi <= lo:
        return (vol != 0).astype(np.float32)
    return np.clip((vol - lo) / (hi - lo), 0, 1)


def load_nifti_slices(volumes, segmentations, labels="roi", roi_labels=(1, 2, 4), axis=2,
                      min_roi_fraction=None, k_largest=None, subject_ids=None, image_size=None,
                      percentiles=(0.5, 99.5), target_names=None):
    """Cut NIfTI volumes (BraTS layout) into labelled 2-D slices with ROI masks.

    Every volume and its segmentation are reoriented to the closest canonical
    (RAS+) orientation with ``nibabel.as_closest_canonical``, so ``axis=2`` is
    axial whatever the stored orientation. Each modality is clipped to the
    ``percentiles`` of its non-zero voxels and scaled to [0, 1].

    Parameters
    ----------
    volumes : sequence
        One entry per subject: a path, or a sequence of paths (modalities,
        e.g. T1, T1ce, T2, FLAIR), which become channels.
    segmentations : sequence of path
        One integer label volume per subject (BraTS: 0 background, 1 necrosis,
        2 oedema, 4 enhancing tumour).
    labels : "roi", sequence, dict or callable, default="roi"
        Class of each slice: "roi" gives 1 to slices whose ROI is non-empty
        and 0 otherwise; a sequence gives one label per subject (e.g. tumour
        grade read from a CSV); a dict maps subject id -> label; a callable
        gets ``(subject_id, slice_index, seg_slice)`` and returns the label.
    roi_labels : sequence of int, default=(1, 2, 4)
        Segmentation labels that form the ROI.
    axis : {0, 1, 2}, default=2
        Slicing axis in canonical orientation (0 sagittal, 1 coronal, 2 axial).
    min_roi_fraction : float, optional
        Keep only slices whose ROI covers at least this fraction of the slice.
    k_largest : int, optional
        Keep only the ``k`` slices with the largest ROI area per subject (after
        ``min_roi_fraction``).
    subject_ids : sequence of str, optional
        Default: the segmentation file name without extension and without a
        trailing ``_seg`` (BraTS naming: ``BraTS20_Training_001_seg.nii.gz``).
    image_size : int or (height, width), optional
        Resize slices (bilinear) and masks (nearest).
    target_names : sequence of str, optional
        Names of the classes; default the sorted labels as strings.

    Returns
    -------
    Bunch
        ``X`` float32 (N, C, H, W); ``y`` int64; ``target_names``; ``roi_masks``
        bool (N, H, W); ``roi_available`` (all True: every slice is segmented);
        ``groups`` = subject id, so slices of a subject never straddle a split;
        ``filenames`` ("<segmentation>#<axis>=<index>"); ``slice_index``.
    """
    from ._folder import _size

    if len(volumes) != len(segmentations):
        raise ValueError(f"{len(volumes)} volume entries but {len(segmentations)} segmentations.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}.")
    if k_largest is not None and (not isinstance(k_largest, numbers.Integral) or k_largest < 1):
        raise ValueError(f"k_largest must be a positive integer, got {k_largest!r}.")
    size = _size(image_size)
    if subject_ids is None:
        subject_ids = [Path(s).name.split(".")[0].removesuffix("_seg") for s in segmentations]
    if not callable(labels) and labels != "roi" and not isinstance(labels, dict) \
            and len(labels) != len(volumes):
        raise ValueError(f"labels has {len(labels)} entries for {len(volumes)} subjects.")
    roi_labels = np.asarray(roi_labels)
    X, masks, y, groups, names, index = [], [], [], [], [], []
    for s, (vols, seg_path) in enumerate(zip(volumes, segmentations)):
        vols = [vols] if isinstance(vols, (str, os.PathLike)) else list(vols)
        seg_img, seg = _load_canonical(seg_path)
        channels = []
        for v in vols:
            img, data = _load_canonical(v)
            data = np.squeeze(data)
            if data.shape != seg.shape:
                raise DataLoadError(f"{v} has shape {data.shape} but segmentation {seg_path} "
                                    f"has {seg.shape}.")
            if not np.allclose(img.affine, seg_img.affine, atol=1e-3):
                raise DataLoadError(f"{v} and {seg_path} are not aligned (affines differ).")
            channels.append(_normalise(data, percentiles))
        vol = np.stack(channels)  # (C, X, Y, Z)
        roi = np.isin(np.rint(seg).astype(np.int64), roi_labels)
        vol, roi = np.moveaxis(vol, axis + 1, 1), np.moveaxis(roi, axis, 0)
        area = roi.reshape(len(roi), -1).mean(1)
        keep = np.arange(len(roi))
        if min_roi_fraction is not None:
            keep = keep[area[keep] >= min_roi_fraction]
        if k_largest is not None:
            keep = np.sort(keep[np.argsort(-area[keep], kind="stable")[:k_largest]])
        sid = str(subject_ids[s])
        for k in keep:
            # canonical (x, y) -> image rows from anterior/superior down, as radiologists view
            img2d = np.rot90(vol[:, k], axes=(1, 2)).copy()
            mask2d = np.rot90(roi[k]).copy()
            if size is not None:
                img2d, mask2d = resize_image(img2d, size), resize_mask(mask2d, size)
            if labels == "roi":
                label = int(roi[k].any())
            elif callable(labels):
                label = labels(sid, int(k), np.rot90(np.moveaxis(seg, axis, 0)[k]))
            elif isinstance(labels, dict):
                if sid not in labels:
                    raise DataLoadError(f"No label for subject {sid!r} in labels.")
                label = labels[sid]
            else:
                label = labels[s]
            X.append(img2d)
            masks.append(mask2d)
            y.append(label)
            groups.append(sid)
            names.append(f"{os.fspath(seg_path)}#{'xyz'[axis]}={k}")
            index.append(int(k))
    if not X:
        raise DataLoadError("No slice was selected; relax min_roi_fraction / k_largest.")
    classes = sorted(set(y), key=lambda v: (str(type(v)), v))
    lookup = {c: i for i, c in enumerate(classes)}
    return Bunch(
        X=np.stack(X).astype(np.float32), y=np.array([lookup[v] for v in y], dtype=np.int64),
        target_names=np.array(target_names if target_names is not None
                              else [str(c) for c in classes]),
        roi_masks=np.stack(masks), roi_available=np.ones(len(X), dtype=bool),
        groups=np.array(groups), filenames=np.array(names), slice_index=np.array(index),
    )
