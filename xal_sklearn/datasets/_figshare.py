"""The brain-tumour MRI set with expert masks (Cheng et al., figshare)."""

from pathlib import Path

from ._folder import load_image_folder
from ._io import DataLoadError

__all__ = ["load_brain_tumor_figshare"]

FIGSHARE_CLASSES = ("glioma", "meningioma", "pituitary")

DESCR = """Brain tumour MRI with expert tumour masks (Cheng et al., figshare)

3,064 T1-weighted contrast-enhanced MRI slices from 233 patients, three tumour
classes (glioma, meningioma, pituitary), each slice with an expert-drawn tumour
mask. ``groups`` approximates patients by blocks of 20 consecutive slices: split
by it (see ``group_train_test_split``), never per slice.

Jun Cheng, "brain tumor dataset", figshare, doi:10.6084/m9.figshare.1512427,
licensed CC BY 4.0. Cite: Cheng J. et al., "Enhanced Performance of Brain Tumor
Classification via Tumor Region Augmentation and Partition", PLoS ONE 10(10):
e0140381, 2015; Cheng J. et al., "Retrieval of Brain Tumors by Adaptive Spatial
Pooling and Fisher Vector Representation", PLoS ONE 11(6): e0157112, 2016.
"""


def load_brain_tumor_figshare(root, image_size=128, n_jobs=-1, cache=True, cache_dir=None,
                              progress=None):
    """Load the 3,064-slice brain-tumour MRI set (images, labels, tumour masks).

    The data is not shipped or downloaded: point ``root`` at your copy, laid
    out as ``images/NNNN.png``, ``masks/NNNN.png`` and ``labels.csv``
    (``image,mask,label,group``).

    Parameters
    ----------
    root : path-like
        Folder with ``labels.csv``.
    image_size : int or (height, width) or None, default=128
    n_jobs, cache, cache_dir, progress
        As in :func:`load_image_folder` (reading is threaded and cached).

    Returns
    -------
    Bunch
        As :func:`load_image_folder`, with ``target_names`` = glioma,
        meningioma, pituitary and ``DESCR`` (licence and citation).
    """
    root = Path(root)
    if not (root / "labels.csv").is_file():
        raise DataLoadError(f"{root} does not hold labels.csv of the brain-tumour set.")
    data = load_image_folder(root, "labels.csv", image_size=image_size, classes=FIGSHARE_CLASSES,
                             n_jobs=n_jobs, cache=cache, cache_dir=cache_dir, progress=progress)
    data.DESCR = DESCR
    return data
