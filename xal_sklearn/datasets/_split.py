"""Splits that keep every patient on one side."""

import numpy as np
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils import Bunch

__all__ = ["group_train_test_split", "subset"]


def group_train_test_split(groups, test_size=0.2, random_state=None):
    """Indices of a train/test split in which no group is on both sides.

    A thin wrapper over scikit-learn's ``GroupShuffleSplit`` (``test_size`` is
    the fraction of *groups*, so the fraction of samples varies a little).
    Slices or images of one patient are correlated; a per-image split leaks
    patients into the test set and overstates accuracy.

    Returns
    -------
    train_idx, test_idx : ndarray of int
    """
    groups = np.asarray(groups)
    if len(np.unique(groups)) < 2:
        raise ValueError("Need at least two groups to split by group.")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=random_state)
    train, test = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return np.sort(train), np.sort(test)


def subset(data, idx):
    """The data set Bunch of the samples ``idx``.

    Every per-sample array (a numpy array whose first axis has one entry per label in
    ``data.y``) is indexed; everything else (``target_names``, descriptions, nested
    records) is kept as it is. The input is not changed.

    Parameters
    ----------
    data : Bunch
        As returned by :mod:`xal_sklearn.datasets`.
    idx : array-like of int or bool

    Returns
    -------
    Bunch
    """
    n = len(data.y)
    return Bunch(**{k: (v[idx] if isinstance(v, np.ndarray) and v.ndim and len(v) == n
                        and k != "target_names" else v) for k, v in data.items()})
