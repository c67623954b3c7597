"""Medical image data in: synthetic phantoms, image folders, DICOM, NIfTI, boxes.

Every loader returns a :class:`sklearn.utils.Bunch` with ``X`` float32
(N, C, H, W) in [0, 1], ``y`` int64, ``target_names``, ``roi_masks`` bool
(N, H, W), ``roi_available`` bool (N,) (False: nobody annotated the image --
not the same as "annotated, no lesion"), ``groups`` (patient or study id) and
``filenames``.
"""

from ._boxes import boxes_to_masks, parse_siim_boxes, read_vindr_boxes
from ._figshare import load_brain_tumor_figshare
from ._folder import default_cache_dir, load_image_folder
from ._io import (RESIZE_MODES, DataLoadError, hash_file_stats, read_dicom, read_image,
                  read_mask, resize_image, resize_mask, split_mask_field)
from ._nifti import load_nifti_slices
from ._phantoms import make_lesion_phantoms
from ._shortcut import SHORTCUT_KINDS, add_shortcut, shortcut_split
from ._split import group_train_test_split, subset

__all__ = [
    "DataLoadError",
    "RESIZE_MODES",
    "SHORTCUT_KINDS",
    "add_shortcut",
    "boxes_to_masks",
    "default_cache_dir",
    "group_train_test_split",
    "hash_file_stats",
    "load_brain_tumor_figshare",
    "load_image_folder",
    "load_nifti_slices",
    "make_lesion_phantoms",
    "parse_siim_boxes",
    "read_dicom",
    "read_image",
    "read_mask",
    "read_vindr_boxes",
    "resize_image",
    "resize_mask",
    "shortcut_split",
    "split_mask_field",
    "subset",
]
