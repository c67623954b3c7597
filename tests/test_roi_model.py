"""The ROI model: learning where the ROI is from labelled images, and handing it to strategies."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

from xal_sklearn import ActiveLearner, CNNClassifier, ROIPredictor, dual_criterion_sampling
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.learner import NoROIModelWarning, QueryWithoutROIWarning
from xal_sklearn.roi_model import (ROIModelError, check_roi_callable_output, roi_model_quality)
from xal_sklearn.strategies import uncertainty_sampling


@pytest.fixture(scope="module")
def lesions():
    """Phantoms whose lesion sits anywhere: train and held-out sets from different seeds."""
    train = make_lesion_phantoms(120, image_size=32, shortcut=0.0, random_state=1)
    test = make_lesion_phantoms(60, image_size=32, shortcut=0.0, random_state=2)
    return train, test


@pytest.fixture(scope="module")
def roi_model(lesions):
    train, _ = lesions
    return ROIPredictor(random_state=0).fit(train.X, train.roi_masks)


def _disc(shape, area):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    r = np.sqrt(area / np.pi)
    return (yy - shape[0] / 2 + 0.5) ** 2 + (xx - shape[1] / 2 + 0.5) ** 2 <= r ** 2


def test_finds_lesions_it_was_not_trained_on(lesions, roi_model):
    _, test = lesions
    q = roi_model_quality(roi_model, test.X, test.roi_masks)
    # baselines that know nothing of the image: an empty mask (Dice 0) and a centred
    # disc of the mean lesion area
    area = test.roi_masks.reshape(len(test.X), -1).sum(1).mean()
    centred = np.broadcast_to(_disc(test.X.shape[2:], area), test.roi_masks.shape)
    centred_dice = np.nanmean(roi_model_quality(lambda X: centred, test.X,
                                                test.roi_masks).dice_per_image)
    assert q.dice > 0.5 and q.dice > centred_dice + 0.3, (q.dice, centred_dice)
    assert q.roi_auc > 0.9
    proba = roi_model.predict_proba(test.X)
    assert proba.shape == test.roi_masks.shape and proba.dtype == np.float32
    assert 0 <= proba.min() and proba.max() <= 1
    np.testing.assert_array_equal(roi_model.predict(test.X), proba >= roi_model.threshold)
    assert roi_model.score(test.X, test.roi_masks) == pytest.approx(q.dice)


def test_follows_scikit_learns_contract_and_is_reproducible(lesions):
    train, test = lesions
    model = ROIPredictor(max_epochs=3, random_state=0)
    assert clone(model).get_params() == model.get_params()
    assert model.set_params(threshold=0.6).threshold == 0.6
    a = ROIPredictor(max_epochs=3, random_state=0).fit(train.X[:40], train.roi_masks[:40])
    b = ROIPredictor(max_epochs=3, random_state=0).fit(train.X[:40], train.roi_masks[:40])
    np.testing.assert_array_equal(a.predict_proba(test.X), b.predict_proba(test.X))
    c = ROIPredictor(max_epochs=3, random_state=1).fit(train.X[:40], train.roi_masks[:40])
    assert not np.array_equal(a.predict_proba(test.X), c.predict_proba(test.X))


def test_max_steps_caps_the_training(lesions, monkeypatch):
    train, _ = lesions
    steps = []
    original = torch.optim.Adam.step

    def counting(self, *a, **k):
        steps.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    ROIPredictor(max_epochs=10, max_steps=7, batch_size=16).fit(train.X[:64], train.roi_masks[:64])
    assert len(steps) == 7
    steps.clear()
    ROIPredictor(max_epochs=2, max_steps=None, batch_size=16).fit(train.X[:64],
                                                                  train.roi_masks[:64])
    assert len(steps) == 8  # 2 epochs of 4 batches


def test_warm_start_continues_for_warm_epochs(lesions, monkeypatch):
    train, _ = lesions
    model = ROIPredictor(max_epochs=10, max_steps=6, warm_start=True, warm_epochs=1,
                         batch_size=16, random_state=0).fit(train.X[:64], train.roi_masks[:64])
    before = {k: v.detach().clone() for k, v in model.module_.named_parameters()}
    steps = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step",
                        lambda self, *a, **k: (steps.append(1), original(self, *a, **k))[1])
    model.fit(train.X[:80], train.roi_masks[:80])
    assert len(steps) == 5 and model.n_fits_ == 2 and model.n_train_ == 80  # 1 epoch of 80
    # it went on from the fitted weights: a fresh start would be far from them
    after = dict(model.module_.named_parameters())
    moved = max(float((after[k].detach() - v).abs().max()) for k, v in before.items())
    assert 0 < moved < 0.05  # five Adam steps of lr 3e-3
    # the learner continues last round's model when the template asks for it
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                            dual_criterion_sampling,
                            roi_model=ROIPredictor(warm_start=True, max_steps=3, warm_epochs=1),
                            random_state=0)
    learner.fit(train.X[:20], train.y[:20], train.roi_masks[:20])
    first = learner.roi_model_
    learner.teach(train.X[20:30], train.y[20:30], train.roi_masks[20:30])
    assert learner.roi_model_.n_fits_ == 2 and first.n_fits_ == 1  # a copy went on


def test_images_without_an_annotation_are_left_out_and_empty_ones_count(lesions):
    train, _ = lesions
    masks = [m for m in train.roi_masks[:20]]
    masks[:5] = [None] * 5
    masks[5] = np.zeros_like(masks[5])  # annotated: no lesion
    model = ROIPredictor(max_epochs=1).fit(train.X[:20], masks)
    assert model.n_train_ == 15 and model.n_empty_ == 1
    with pytest.raises(ValueError, match="No image carries an ROI annotation"):
        ROIPredictor().fit(train.X[:3], [None, None, None])


@pytest.mark.parametrize("params, message", [
    (dict(threshold=0.0), r"threshold must lie in \(0, 1\)"),
    (dict(threshold=1.5), r"threshold must lie in \(0, 1\)"),
    (dict(max_epochs=0), "max_epochs must be a positive integer"),
    (dict(max_steps=0), "max_steps must be a positive integer or None"),
    (dict(n_filters=(8, 16, 32)), "n_filters must name 2 blocks"),
])
def test_bad_parameters_are_named(lesions, params, message):
    train, _ = lesions
    with pytest.raises(ValueError, match=message):
        ROIPredictor(**params).fit(train.X[:4], train.roi_masks[:4])


def test_save_and_load_without_pickle(lesions, roi_model, tmp_path):
    _, test = lesions
    path = roi_model.save(tmp_path / "roi.pt")
    loaded = ROIPredictor.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(test.X), roi_model.predict_proba(test.X))
    # a template sets the run-time parameters; its architecture must match
    assert ROIPredictor.load(path, ROIPredictor(threshold=0.7)).threshold == 0.7
    with pytest.raises(ROIModelError, match="n_filters"):
        ROIPredictor.load(path, ROIPredictor(n_filters=(8, 16)))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ROIModelError, match="not an ROI model"):
        ROIPredictor.load(tmp_path / "junk.pt")
    with pytest.raises(ROIModelError, match=r"fitted on images of shape \(1, 32, 32\)"):
        loaded.predict(np.zeros((2, 1, 48, 48), np.float32))


def test_warm_start_loads_smallcnn_blocks(lesions, tmp_path):
    from xal_sklearn import pretrain_encoder

    train, _ = lesions
    weights = pretrain_encoder(train.X[:64], module=CNNClassifier(n_classes=3), epochs=1,
                               batch_size=32, random_state=0, progress=False)
    model = ROIPredictor(max_epochs=1, init_weights=weights, random_state=0)
    first = weights.state["features.0.weight"]
    # with no training step the first block would be the pretrained one
    model.set_params(max_steps=1, lr=1e-12).fit(train.X[:8], train.roi_masks[:8])
    torch.testing.assert_close(model.module_.features[0].weight.detach(), first)


@pytest.mark.parametrize("output, message", [
    (lambda X: np.zeros((len(X), 16, 16), bool), "spatial shape"),
    (lambda X: np.zeros((len(X) - 1, 32, 32), bool), "shape"),
    (lambda X: np.full((len(X), 32, 32), np.nan), "NaN"),
    (lambda X: np.array([["a"] * 32] * 32 * len(X)).reshape(len(X), 32, 32), "dtype"),
])
def test_a_bad_roi_callable_is_named_and_leaves_the_learner_unchanged(lesions, output, message):
    train, _ = lesions
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                            dual_criterion_sampling, X_training=train.X[:12],
                            y_training=train.y[:12], roi_model=output, random_state=0)
    learner.fit(train.X[:12], train.y[:12])
    before = (learner.n_queries_, learner.query_scores_ if hasattr(learner, "query_scores_")
              else None)
    with pytest.raises(ROIModelError, match=message):
        learner.query(train.X[12:30], n_instances=3)
    assert (learner.n_queries_, getattr(learner, "query_scores_", None)) == before


def test_callable_output_check_accepts_a_channel_axis_and_soft_values():
    out = check_roi_callable_output(np.full((2, 1, 4, 4), 0.7), 2, (4, 4))
    assert out.dtype == bool and out.shape == (2, 4, 4) and out.all()


def _learner(train, n, net_epochs, roi_epochs):
    """A learner on the first ``n`` training phantoms with their ROIs and an ROI model."""
    net = CNNClassifier(n_classes=3, max_epochs=net_epochs, random_state=0)
    return net, ActiveLearner(net, dual_criterion_sampling, X_training=train.X[:n],
                              y_training=train.y[:n], roi_training=train.roi_masks[:n],
                              roi_model=ROIPredictor(max_epochs=roi_epochs, random_state=0),
                              random_state=0)


def test_learner_hands_predicted_rois_to_the_strategy(lesions):
    train, test = lesions
    _, learner = _learner(train, 40, net_epochs=2, roi_epochs=10)
    idx, _ = learner.query(test.X, n_instances=5)
    assert learner.roi_model_.n_train_ == 40
    assert set(learner.pool_roi_source_) <= {"predicted", "none"}
    assert (learner.pool_roi_source_ == "predicted").mean() > 0.8
    assert list(learner.query_scores_.roi_source) == list(learner.pool_roi_source_[idx])
    # the same query given the predicted masks by hand chooses the same images
    masks = learner.roi_model_.predict(test.X)
    by_hand = dual_criterion_sampling(learner, test.X, 5, roi_masks=masks,
                                      random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(np.sort(by_hand), np.sort(idx))
    # masks the caller passes win; a list's None entries are drawn by the model
    learner.query(test.X, n_instances=5, roi_masks=test.roi_masks)
    assert set(learner.pool_roi_source_) == {"given"}
    partial = [m if i % 2 else None for i, m in enumerate(test.roi_masks)]
    learner.query(test.X, n_instances=5, roi_masks=partial)
    assert set(learner.pool_roi_source_[1::2]) == {"given"}
    assert set(learner.pool_roi_source_[::2]) <= {"predicted", "none"}
    # a strategy that takes no ROIs is not handed any (and no model runs for it)
    learner.query_strategy = uncertainty_sampling
    learner.query(test.X, n_instances=5)
    assert learner.pool_roi_source_ is None


def test_teach_refits_the_roi_model_with_every_annotated_image(lesions):
    train, _ = lesions
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                            dual_criterion_sampling, roi_model=ROIPredictor(max_epochs=1),
                            random_state=0)
    with pytest.warns(NoROIModelWarning, match="No labelled image has an ROI yet"):
        learner.fit(train.X[:10], train.y[:10])
    assert learner.roi_model_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no pool ROIs: dual falls back to entropy
        idx, _ = learner.query(train.X[20:40], n_instances=4)
    assert set(learner.pool_roi_source_) == {"none"}
    learner.teach(train.X[10:20], train.y[10:20], roi_masks=[None] * 4 + list(
        train.roi_masks[14:20]))
    assert learner.roi_model_.n_train_ == 6
    assert learner.roi_annotated_.tolist() == [False] * 14 + [True] * 6


def test_a_batch_mostly_without_rois_is_said(lesions):
    train, test = lesions
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                            dual_criterion_sampling, X_training=train.X[:12],
                            y_training=train.y[:12], random_state=0)
    masks = test.roi_masks.copy()
    masks[:55] = False  # only 5 of 60 pool images have an ROI
    with pytest.warns(QueryWithoutROIWarning, match="of the 10 queried images have no ROI"):
        learner.query(test.X, n_instances=10, roi_masks=masks)


def test_learner_saves_and_loads_its_roi_model(lesions, tmp_path):
    train, test = lesions
    net, learner = _learner(train, 20, net_epochs=1, roi_epochs=2)
    learner.fit(train.X[:20], train.y[:20], train.roi_masks[:20])
    learner.save(tmp_path / "l")
    again = ActiveLearner.load(tmp_path / "l", net)
    np.testing.assert_array_equal(again.roi_model_.predict_proba(test.X),
                                  learner.roi_model_.predict_proba(test.X))
    np.testing.assert_array_equal(again.query(test.X, 5)[0], learner.query(test.X, 5)[0])
    with pytest.raises(ROIModelError, match="n_filters"):
        ActiveLearner.load(tmp_path / "l", net, roi_model=ROIPredictor(n_filters=(8, 8)))
    # a callable is code: not saved, given again
    organ = lambda X: np.ones((len(X),) + X.shape[2:], bool)  # noqa: E731
    learner.set_params(roi_model=organ).fit(train.X[:20], train.y[:20])
    learner.save(tmp_path / "c")
    with pytest.raises(ValueError, match="callable roi_model"):
        ActiveLearner.load(tmp_path / "c", net)
    assert ActiveLearner.load(tmp_path / "c", net, roi_model=organ).roi_model_ is organ
