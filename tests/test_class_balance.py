"""Images of other aspect ratios (resize modes) and classes of unequal size (class_weight):
issue 38, parts 1-2."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.utils.class_weight import compute_class_weight

from xal_sklearn import ActiveLearner, CNNClassifier
from xal_sklearn.datasets import load_image_folder, make_lesion_phantoms, resize_image, resize_mask


def _block(h, w, top, left, size):
    image = np.zeros((1, h, w), np.float32)
    image[0, top:top + size, left:left + size] = 1.0
    return image


@pytest.mark.parametrize("mode, rows, cols", [
    # 100 x 200 -> 64 x 64; the block covers rows 40-60, columns 90-110
    ("stretch", (26, 37), (29, 34)),   # rows x0.64, columns x0.32
    ("pad", (29, 34), (29, 34)),       # x0.32, then 16 black rows above and below
    ("crop", (26, 37), (26, 37)),      # x0.64, then 32 columns cut off each side
])
def test_resize_modes_by_hand(mode, rows, cols):
    image = _block(100, 200, 40, 90, 20)
    out = resize_image(image, (64, 64), mode)
    mask = resize_mask(image[0] > 0, (64, 64), mode)
    ys, xs = np.nonzero(mask)
    assert out.shape == (1, 64, 64) and mask.shape == (64, 64)
    assert (ys.min(), ys.max()) == rows and (xs.min(), xs.max()) == cols
    # the mask stays on the image's block, whatever the mode
    assert out[0][mask].mean() > 0.9 and out[0][~mask].mean() < 0.05
    if mode == "pad":
        assert not out[0, :16].any() and not out[0, 48:].any()  # the black bands


def test_resize_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="resize must be one of stretch, pad, crop; got 'fit'"):
        resize_image(np.zeros((1, 10, 20), np.float32), (8, 8), "fit")


def test_image_folder_of_mixed_aspect_ratios(tmp_path):
    rows = []
    for i, (h, w) in enumerate([(60, 120), (120, 60), (80, 80), (50, 150)]):
        side = min(h, w) // 2
        image = _block(h, w, (h - side) // 2, (w - side) // 2, side)
        Image.fromarray((image[0] * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
        Image.fromarray((image[0] > 0).astype(np.uint8) * 255).save(tmp_path / f"{i}_m.png")
        rows.append([f"{i}.png", f"{i}_m.png", "ab"[i % 2]])
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "mask", "label"], *rows])
    loaded = {mode: load_image_folder(tmp_path, image_size=32, resize=mode,
                                      cache_dir=tmp_path / "cache")
              for mode in ("stretch", "pad", "crop")}
    for mode, d in loaded.items():
        assert d.X.shape == (4, 1, 32, 32) and d.roi_masks.shape == (4, 32, 32)
        # masks transformed with their images: the ROI is where the block is
        assert all(d.X[k, 0][d.roi_masks[k]].mean() > 0.7 for k in range(4)), mode
        assert all(d.X[k, 0][~d.roi_masks[k]].mean() < 0.1 for k in range(4)), mode
    # crop is the default (chosen on validation groups of breast ultrasound)
    default = load_image_folder(tmp_path, image_size=32, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(default.X, loaded["crop"].X)
    # three caches, not one: the mode is part of the key
    assert not np.array_equal(loaded["pad"].X, loaded["stretch"].X)
    assert not np.array_equal(loaded["crop"].X, loaded["pad"].X)
    with pytest.raises(ValueError, match="resize must be one of"):
        load_image_folder(tmp_path, image_size=32, resize="squash", cache=False)


@pytest.fixture(scope="module")
def unequal():
    d = make_lesion_phantoms(60, 32, random_state=0)
    y = np.array(["a"] * 40 + ["b"] * 15 + ["c"] * 5)
    return d.X, y


def test_balanced_weights_are_scikit_learns(unequal):
    X, y = unequal
    net = CNNClassifier(max_epochs=1, class_weight="balanced", random_state=0).fit(X, y)
    expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
    np.testing.assert_allclose(net.class_weight_, expected, rtol=1e-6)
    np.testing.assert_allclose(net.criterion_.weight.numpy(), expected, rtol=1e-6)
    # a class the labels lack (fixed classes) weighs 1: it has no image to weigh
    net = CNNClassifier(classes=["a", "b", "c", "d"], max_epochs=1,
                        class_weight="balanced").fit(X, y)
    assert net.class_weight_[3] == 1.0
    np.testing.assert_allclose(net.class_weight_[:3], 60 / (3 * np.array([40, 15, 5])))
    # a dict maps labels to weights, the others get 1
    net = CNNClassifier(max_epochs=1, class_weight={"c": 3.0}).fit(X, y)
    np.testing.assert_allclose(net.class_weight_, [1, 1, 3])
    assert clone(net).get_params()["class_weight"] == {"c": 3.0}


def test_the_weighted_loss_is_the_criterions(unequal):
    X, y = unequal
    net = CNNClassifier(max_epochs=1, class_weight="balanced", random_state=0).fit(X, y)
    logits = torch.randn(6, 3)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    weight = torch.as_tensor(net.class_weight_)
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weight)
    assert torch.allclose(net.get_loss(logits, target), expected)
    # back to None: the next fit weighs every image alike again
    net.set_params(class_weight=None, warm_start=True).fit(X, y)
    assert net.class_weight_ is None and net.criterion_.weight is None


@pytest.mark.parametrize("value, message", [
    ({"z": 1.0}, "class_weight names \\['z'\\], which are not classes"),
    ({"a": -1.0}, "class_weight\\['a'\\] must be a number >= 0"),
    ("inverse", 'class_weight must be None, "balanced" or a dict'),
])
def test_bad_class_weights_are_refused_before_training(unequal, value, message):
    X, y = unequal
    net = CNNClassifier(max_epochs=1, class_weight=value)
    with pytest.raises(ValueError, match=message):
        net.fit(X, y)
    assert not net.initialized_
    with pytest.raises(ValueError, match="class_weight or criterion__weight, not both"):
        CNNClassifier(max_epochs=1, class_weight="balanced",
                      criterion__weight=torch.ones(3)).fit(X, y)


def test_a_learner_saves_and_loads_its_class_weights(unequal, tmp_path):
    X, y = unequal
    learner = ActiveLearner(CNNClassifier(max_epochs=1, class_weight="balanced",
                                          random_state=0)).fit(X, y)
    learner.save(tmp_path / "l", include_data=False)
    again = ActiveLearner.load(tmp_path / "l", CNNClassifier(max_epochs=1,
                                                             class_weight="balanced"),
                               X_training=X, y_training=y)
    np.testing.assert_array_equal(again.estimator_.class_weight_,
                                  learner.estimator_.class_weight_)
    np.testing.assert_allclose(again.predict_proba(X[:4]), learner.predict_proba(X[:4]))


def test_cli_and_campaign_take_class_weight(tmp_path, unequal, capsys):
    import json

    from xal_sklearn.campaign import Campaign
    from xal_sklearn.cli import main
    from xal_sklearn.experiments import load_results

    assert main(["run", "--n-samples", "60", "--image-size", "32", "--initial", "20",
                 "--query-size", "10", "--budget", "30", "--seeds", "1", "--epochs", "1",
                 "--strategies", "random,entropy", "--class-weight", "balanced",
                 "--metric", "balanced_accuracy",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "In words (test balanced accuracy at the final budget" in out
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["template"]["class_weight"] == "balanced"
    assert config["extra"]["metric"] == "balanced_accuracy"
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Difference in balanced accuracy (strategy - reference)" in report
    ratio = load_results(tmp_path / "r")["test_class_ratio"]  # the test split's balance
    assert (ratio >= 1).all()
    X, _ = unequal
    for i in range(4):
        Image.fromarray((X[i, 0] * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    c = Campaign.create(tmp_path / "study", tmp_path, ["a", "b"], image_size=32,
                        class_weight="balanced")
    assert c._template().class_weight == "balanced"
    with pytest.raises(ValueError, match='class_weight must be None or "balanced"'):
        Campaign.create(tmp_path / "other", tmp_path, ["a", "b"], class_weight="inverse")
