"""The real brain-tumour MRI set from ../shared (skipped when it is not there)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from xal_sklearn import ActiveLearner, CNNClassifier, score_pool
from xal_sklearn.datasets import group_train_test_split, load_brain_tumor_figshare

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brain-tumor-figshare"
pytestmark = [pytest.mark.shared,
              pytest.mark.skipif(not (ROOT / "labels.csv").is_file(), reason=f"{ROOT} absent")]


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    return load_brain_tumor_figshare(ROOT, image_size=64, cache_dir=tmp_path_factory.mktemp("c"),
                                     progress=False)


def test_loads_every_slice_with_its_mask(mri):
    assert mri.X.shape == (3064, 1, 64, 64) and mri.X.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(mri.y), [1426, 708, 930])
    np.testing.assert_array_equal(mri.target_names, ["glioma", "meningioma", "pituitary"])
    area = mri.roi_masks.reshape(3064, -1).mean(1)
    assert mri.roi_available.all() and area.min() > 0 and 0.005 < np.median(area) < 0.03
    assert 0 <= mri.X.min() and mri.X.max() <= 1 and mri.X.mean() > 0.05
    assert "CC BY 4.0" in mri.DESCR and mri.filenames[0] == "images/0001.png"
    assert len(np.unique(mri.groups)) == 154


def test_group_split_never_shares_a_block(mri):
    train, test = group_train_test_split(mri.groups, test_size=0.2, random_state=0)
    assert not set(mri.groups[train]) & set(mri.groups[test])
    assert len(train) + len(test) == 3064 and 0.15 < len(test) / 3064 < 0.25


@pytest.mark.slow
def test_learns_and_queries_on_real_slices(mri):
    torch.set_num_threads(2)
    train, test = group_train_test_split(mri.groups, test_size=0.2, random_state=0)
    labelled = np.random.RandomState(0).choice(train, 300, replace=False)
    pool = np.setdiff1d(train, labelled)
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=8, random_state=0),
                            X_training=mri.X[labelled], y_training=mri.y[labelled],
                            roi_training=mri.roi_masks[labelled], random_state=0)
    majority = np.bincount(mri.y[test]).max() / len(test)
    assert learner.score(mri.X[test], mri.y[test]) > majority + 0.05
    idx, _ = learner.query(mri.X[pool], n_instances=20, roi_masks=mri.roi_masks[pool], alpha=0.3)
    s = score_pool(learner, mri.X[pool], mri.roi_masks[pool], alpha=0.3)
    assert s.combined[idx].min() >= np.delete(s.combined, idx).max() - 1e-9
    assert np.isfinite(s.alignment).all() and (s.alignment >= 0).all()
