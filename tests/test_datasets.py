import numpy as np
import pytest

from xal_sklearn.datasets import make_lesion_phantoms


def test_phantoms_shapes_types_and_determinism():
    a = make_lesion_phantoms(40, image_size=32, n_classes=4, shortcut=0.8, random_state=5)
    b = make_lesion_phantoms(40, image_size=32, n_classes=4, shortcut=0.8, random_state=5)
    assert a.X.shape == (40, 1, 32, 32) and a.X.dtype == np.float32
    assert a.y.dtype == np.int64 and set(a.y) == {0, 1, 2, 3}
    assert a.roi_masks.shape == (40, 32, 32) and a.roi_masks.dtype == bool
    assert a.roi_available.all() and len(a.target_names) == 4
    assert 0 <= a.X.min() and a.X.max() <= 1
    for key in ("X", "y", "roi_masks", "marker_masks", "marker_class"):
        np.testing.assert_array_equal(a[key], b[key])
    c = make_lesion_phantoms(40, image_size=32, n_classes=4, shortcut=0.8, random_state=6)
    assert not np.array_equal(a.X, c.X)
    assert "SYNTHETIC" in a.DESCR


def test_lesion_is_inside_roi_and_brighter_than_tissue():
    d = make_lesion_phantoms(60, image_size=48, random_state=0, noise=0.0)
    solid = d.y == 0
    inside = np.array([d.X[i, 0][d.roi_masks[i]].mean() for i in np.where(solid)[0]])
    ring = np.array([d.X[i, 0][d.roi_masks[i]].mean() for i in np.where(d.y == 1)[0]])
    assert inside.mean() > 0.6 and ring.mean() > 0.4
    assert (d.roi_masks.reshape(60, -1).mean(1) > 0.005).all()


def test_shortcut_marker_agreement_rate():
    d = make_lesion_phantoms(2000, image_size=32, shortcut=0.7, random_state=0)
    assert abs(np.mean(d.marker_class == d.y) - 0.7) < 0.04
    assert d.marker_masks.reshape(2000, -1).any(axis=1).all()
    # the marker sits in a corner, away from the lesion mask
    assert not (d.marker_masks & d.roi_masks).any()
    none = make_lesion_phantoms(50, image_size=32, shortcut=0.0, random_state=0)
    assert not none.marker_masks.any() and (none.marker_class == -1).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"shortcut": 1.5}, "shortcut must be a number in"),
    ({"image_size": 16}, "image_size must be an integer >= 32"),
    ({"n_classes": 1}, "n_classes must be an integer from 2 to 8"),
    ({"n_samples": 0}, "n_samples must be a positive integer"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_lesion_phantoms(**kwargs)


def test_group_split_helper():
    from xal_sklearn.datasets import group_train_test_split

    groups = np.repeat(np.arange(20), 5)
    train, test = group_train_test_split(groups, test_size=0.25, random_state=0)
    assert not set(groups[train]) & set(groups[test]) and len(test) == 25
    again = group_train_test_split(groups, test_size=0.25, random_state=0)
    np.testing.assert_array_equal(test, again[1])
    with pytest.raises(ValueError, match="two groups"):
        group_train_test_split(np.zeros(5))


def test_subset_indexes_per_sample_arrays_only_and_leaves_the_input():
    from xal_sklearn.datasets import make_lesion_phantoms, subset

    data = make_lesion_phantoms(12, 32, random_state=0)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in data.items()}
    idx = np.array([5, 0, 7])
    part = subset(data, idx)
    for k, v in data.items():
        if isinstance(v, np.ndarray) and v.ndim and len(v) == 12 and k != "target_names":
            np.testing.assert_array_equal(part[k], v[idx])
        else:
            assert part[k] is v
    np.testing.assert_array_equal(part.target_names, data.target_names)
    assert len(subset(data, data.y == data.y[0]).y) == int((data.y == data.y[0]).sum())
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(data[k], v)
