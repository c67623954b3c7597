"""The torch Dataset that CNNClassifier trains and predicts on."""

import numpy as np
import torch
from torch.utils.data import Dataset

from ._pool import as_batch_tensor


class ImageDataset(Dataset):
    """Images of any numeric dtype and layout, labels, and optional ROI masks.

    Each item is cast to a contiguous float32 tensor on access, so an integer
    or float64 array, a strided view or a memmap is never copied whole. With
    ``roi_masks``, an item's input is a dict ``{"x", "roi", "has_roi"}`` that
    :class:`~xal_sklearn.CNNClassifier` unpacks in its training step; without,
    it is the image tensor, as skorch's own dataset gives.

    Parameters
    ----------
    X : array-like (n, C, H, W) or (n, C, D, H, W)
    y : array-like (n,) of encoded labels, optional
    roi_masks : ndarray of bool (n, *mask_spatial), optional
        Masks at any resolution; an all-False mask means "no ROI".
    """

    def __init__(self, X, y=None, roi_masks=None):
        self.X, self.y, self.roi_masks = X, y, roi_masks
        self.has_roi = (None if roi_masks is None
                        else np.asarray(roi_masks).reshape(len(roi_masks), -1).any(axis=1))

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        x = as_batch_tensor(self.X[i])
        y = torch.zeros((), dtype=torch.int64) if self.y is None else torch.as_tensor(self.y[i])
        if self.roi_masks is None:
            return x, y
        return {"x": x, "roi": as_batch_tensor(self.roi_masks[i], bool),
                "has_roi": torch.tensor(bool(self.has_roi[i]))}, y
