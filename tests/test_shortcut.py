"""The shortcut benchmark: spurious features injected into any data set."""

import numpy as np
import pytest
from scipy import stats
from sklearn.utils import Bunch

from xal_sklearn.datasets import (SHORTCUT_KINDS, add_shortcut, group_train_test_split,
                                  shortcut_split, subset)

N, N_TEST, C = 4000, 1500, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = (0.2 + 0.5 * rng.rand(N, 1, 24, 24)).astype(np.float32)
    return Bunch(X=X, y=rng.randint(0, C, N), roi_masks=np.zeros((N, 24, 24), bool),
                 target_names=np.array(["a", "b", "c"]))


@pytest.mark.parametrize("kind", list(SHORTCUT_KINDS))
def test_agreement_in_the_pool_and_chance_on_the_test_split(data, kind):
    test_idx = np.arange(N - N_TEST, N)
    out = add_shortcut(data, kind, agree=0.9, test_idx=test_idx, random_state=0)
    feature, pool = out.shortcut.feature_class, np.arange(N - N_TEST)
    assert abs(np.mean(feature[pool] == data.y[pool]) - 0.9) < 0.02
    assert abs(np.mean(feature[test_idx] == data.y[test_idx]) - 1 / C) < 0.04
    table = np.array([[np.sum((feature[test_idx] == a) & (data.y[test_idx] == b))
                       for b in range(C)] for a in range(C)])
    assert stats.chi2_contingency(table).pvalue > 1e-3  # independent of the label
    wrong = pool[feature[pool] != data.y[pool]]  # disagreeing pool images: another class
    assert np.all(feature[wrong] != data.y[wrong])
    np.testing.assert_array_equal(out.shortcut.test_idx, test_idx)
    assert out.shortcut.kind == kind and out.shortcut.description == SHORTCUT_KINDS[kind]


def _decode(out, kind):
    """The class each image's pixels show, read back from the image alone."""
    X, masks = out.X[:, 0], out.shortcut.masks
    if kind == "intensity":
        return None
    shapes = {c: masks[np.flatnonzero(out.shortcut.feature_class == c)[0]] for c in range(C)}
    return np.array([next(c for c, m in shapes.items() if np.all(x[m] == 1.0)
                          and not np.all(x[~m] == 1.0)) for x in X])


@pytest.mark.parametrize("kind", list(SHORTCUT_KINDS))
def test_the_feature_is_where_the_bunch_says(data, kind):
    out = add_shortcut(data, kind, agree=0.9, random_state=1)
    masks, feature = out.shortcut.masks, out.shortcut.feature_class
    if kind == "intensity":
        assert masks.all()
        gains = np.linspace(0.8, 1.2, C)
        np.testing.assert_allclose(out.X, np.clip(data.X * gains[feature][:, None, None, None],
                                                  0, 1), rtol=1e-6)
        means = [out.X[feature == c].mean() / data.X[feature == c].mean() for c in range(C)]
        assert np.all(np.diff(means) > 0.15)
        return
    changed = out.X[:, 0] != data.X[:, 0]
    np.testing.assert_array_equal(changed, masks)  # drawn exactly there, nowhere else
    assert np.all(out.X[:, 0][masks] == 1.0)
    assert len({masks[np.flatnonzero(feature == c)[0]].tobytes() for c in range(C)}) == C
    np.testing.assert_array_equal(_decode(out, kind), feature)


def test_input_untouched_reproducible_and_shared(data):
    before = data.X.copy()
    a = add_shortcut(data, "marker", 0.9, random_state=3)
    b = add_shortcut(data, "marker", 0.9, random_state=3)
    np.testing.assert_array_equal(data.X, before)
    assert "shortcut" not in data and a.X is not data.X
    np.testing.assert_array_equal(a.X, b.X)
    assert a.roi_masks is data.roi_masks  # what is not changed is not copied
    c = add_shortcut(data, "marker", 0.9, random_state=4)
    assert not np.array_equal(a.shortcut.feature_class, c.shortcut.feature_class)
    assert np.mean(add_shortcut(data, "border", 1.0).shortcut.feature_class == data.y) == 1
    rgb = Bunch(X=np.repeat(data.X[:50], 3, axis=1), y=data.y[:50])
    out = add_shortcut(rgb, "border", 0.5, random_state=0)
    assert np.all(out.X[:, :, out.shortcut.masks[0]][0] == 1.0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(kind="text"), ValueError, "Unknown shortcut kind 'text'"),
    (dict(kind="marker", agree=1.5), ValueError, "agree must be a probability"),
    (dict(kind="marker", agree=-0.1), ValueError, "agree must be a probability"),
    (dict(kind="marker", agree=True), ValueError, "agree must be a probability"),
    (dict(kind="marker", test_idx=[0, N]), ValueError, "indices outside"),
    (dict(kind="marker", test_idx=[0.5]), ValueError, "integer indices"),
    (dict(kind="marker", test_idx=np.ones(3, bool)), ValueError, "one value per image"),
])
def test_bad_arguments(data, kwargs, error, message):
    before = data.X.copy()
    with pytest.raises(error, match=message):
        add_shortcut(data, **kwargs)
    np.testing.assert_array_equal(data.X, before)


def test_images_it_cannot_draw_on(data):
    with pytest.raises(TypeError, match="floating-point images"):
        add_shortcut(Bunch(X=(data.X[:10] * 255).astype(np.uint8), y=data.y[:10]), "marker")
    with pytest.raises(ValueError, match="1- or 3-channel"):
        add_shortcut(Bunch(X=np.repeat(data.X[:10], 2, axis=1), y=data.y[:10]), "marker")
    with pytest.raises(ValueError, match="2-D images"):
        add_shortcut(Bunch(X=data.X[:10, 0], y=data.y[:10]), "marker")
    with pytest.raises(ValueError, match="too small"):
        add_shortcut(Bunch(X=data.X[:10, :, :8, :8], y=data.y[:10]), "marker")
    once = add_shortcut(Bunch(X=data.X[:10], y=data.y[:10]), "marker")
    with pytest.raises(ValueError, match="already carries a 'marker' shortcut"):
        add_shortcut(once, "border")


def test_shortcut_split_is_the_benchmark_xal_run_makes(data):
    grouped = Bunch(**data, groups=np.arange(N) // 10)
    before = grouped.X.copy()
    pool, test = shortcut_split(grouped, "marker", 0.9, test_size=0.25)
    np.testing.assert_array_equal(grouped.X, before)  # the input is untouched
    # the composition xal run made before this helper existed, so old results folders
    # are rebuilt image for image
    train, held_out = group_train_test_split(grouped.groups, 0.25, random_state=0)
    np.testing.assert_array_equal(pool.X, add_shortcut(subset(grouped, train), "marker", 0.9,
                                                       random_state=0).X)
    np.testing.assert_array_equal(test.y, grouped.y[held_out])
    assert not set(pool.groups) & set(test.groups)
    assert np.mean(pool.shortcut.feature_class == pool.y) == pytest.approx(0.9, abs=0.02)
    np.testing.assert_array_equal(test.shortcut.test_idx, np.arange(len(test.y)))
    assert stats.chi2_contingency(np.histogram2d(test.y, test.shortcut.feature_class,
                                                 bins=C)[0]).pvalue > 0.001
    # a separate test set: all of data is the pool, seeds as xal run's phantoms use them
    pool2, test2 = shortcut_split(data, "border", 0.8, test=subset(data, np.arange(500)))
    np.testing.assert_array_equal(pool2.X, add_shortcut(data, "border", 0.8, random_state=0).X)
    assert len(test2.y) == 500 and len(test2.shortcut.test_idx) == 500
    with pytest.raises(ValueError, match="no 'groups' to split by"):
        shortcut_split(data, "marker")


def test_cli_shortcut_option(tmp_path, capsys):
    import json

    from xal_sklearn.cli import main

    for value, message in [("text", "unknown kind 'text'"), ("marker:x", "must be a number"),
                           ("border:2", "must lie in [0, 1]")]:
        with pytest.raises(SystemExit):
            main(["run", "--shortcut", value, "--out", str(tmp_path / "no")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    out = tmp_path / "res"
    assert main(["run", "--shortcut", "intensity:0.9", "--n-samples", "90", "--image-size",
                 "32", "--initial", "30", "--query-size", "10", "--budget", "40", "--seeds",
                 "1", "--epochs", "1", "--strategies", "random", "--out", str(out),
                 "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["extra"]["shortcut"] == ["intensity", 0.9]
    assert "intensity shortcut that agrees with the label in 90% of the pool" in \
        (out / "report.md").read_text()
