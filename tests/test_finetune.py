"""Fine-tuning from a warm start: head_init="probe" (ProbeHead) and freeze_epochs."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from skorch.callbacks import Callback

from xal_sklearn import CNNClassifier, SmallCNN, pretrain_encoder
from xal_sklearn.embedding import find_head
from xal_sklearn.finetune import FreezeEncoder, ProbeHead, freeze_epoch_count, probe_scale
from xal_sklearn.pretrain import EncoderWeights, encoder_features


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 1, 16, 16)).astype(np.float32)
    y = np.arange(48) % 3
    X[y == 1, :, :8] += 1.5
    return X, y


@pytest.fixture(scope="module")
def weights(data):
    return pretrain_encoder(data[0], epochs=1, batch_size=16, random_state=0, progress=False)


def _encoder_and_head(net):
    head_ids = {id(p) for p in find_head(net.module_).parameters()}
    encoder, head = {}, []
    for name, p in net.module_.named_parameters():
        if id(p) in head_ids:
            head.append(p.detach().clone())
        else:
            encoder[name] = p.detach().clone()
    return encoder, head


def test_frozen_all_the_way_trains_only_the_head(data, weights):
    X, y = data
    net = CNNClassifier(n_classes=3, max_epochs=3, init_weights=weights, freeze_epochs=1.0,
                        random_state=0).fit(X, y)
    encoder, head = _encoder_and_head(net)
    for name, value in encoder.items():
        assert torch.equal(value, weights.state[name]), name   # bit for bit the warm start
    fresh = CNNClassifier(n_classes=3, init_weights=weights, random_state=0).initialize()
    assert not torch.equal(head[0], find_head(fresh.module_).weight)
    # unfrozen after the fit, so Grad-CAM and later training see a normal network
    assert all(p.requires_grad for p in net.module_.parameters())


def test_frozen_for_some_epochs_then_everything_trains(data, weights):
    X, y = data
    seen = []

    class Spy(FreezeEncoder):
        def on_epoch_end(self, net, **kwargs):
            seen.append(net.module_.features[0].weight.requires_grad)

    net = CNNClassifier(n_classes=3, max_epochs=4, init_weights=weights, random_state=0,
                        callbacks=[("spy", Spy(2))]).fit(X, y)
    assert seen == [False, False, True, True]
    encoder, _ = _encoder_and_head(net)
    assert not torch.equal(encoder["features.0.weight"], weights.state["features.0.weight"])


def test_freeze_epochs_changes_the_fit_and_is_a_parameter(data, weights):
    X, y = data
    kw = dict(n_classes=3, max_epochs=4, init_weights=weights, random_state=0)
    plain = CNNClassifier(**kw).fit(X, y).predict_proba(X)
    lpft = CNNClassifier(**kw, freeze_epochs=0.5)
    assert clone(lpft).get_params()["freeze_epochs"] == 0.5
    assert not np.allclose(plain, lpft.fit(X, y).predict_proba(X))
    again = clone(lpft).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(again, lpft.predict_proba(X))


@pytest.mark.parametrize("value", [-1, 1.5, "half", True, None])
def test_bad_freeze_epochs_is_refused_before_anything_changes(data, value):
    X, y = data
    net = CNNClassifier(n_classes=3, max_epochs=2, freeze_epochs=value)
    with pytest.raises(ValueError, match="freeze_epochs must be"):
        net.fit(X, y)
    assert not getattr(net, "initialized_", False)


def test_freeze_epoch_count():
    assert freeze_epoch_count(0, 20) == 0
    assert freeze_epoch_count(5, 20) == 5
    assert freeze_epoch_count(50, 20) == 20
    assert freeze_epoch_count(0.5, 20) == 10
    assert freeze_epoch_count(1.0, 20) == 20


def _probe_reference(weights, X, y):
    """Logistic regression on standardised frozen features, by hand."""
    module = SmallCNN()
    weights.load_into(module)
    module.eval()
    with torch.no_grad():
        F = encoder_features(module, torch.from_numpy(X)).double().numpy()
    mu, sd = F.mean(0), probe_scale(F, ProbeHead().sd_floor)
    clf = LogisticRegression(max_iter=2000).fit((F - mu) / sd, y)
    return clf.predict_proba((F - mu) / sd)


def test_probe_head_starts_from_the_logistic_regression_of_the_features(data, weights):
    X, y = data
    seen = {}

    class Spy(Callback):  # runs after ProbeHead, before the first step
        def on_train_begin(self, net, **kwargs):
            seen["proba"] = net.predict_proba(X)

    net = CNNClassifier(n_classes=3, max_epochs=1, init_weights=weights, head_init="probe",
                        random_state=0, callbacks=[("spy", Spy())])
    net.fit(X, y)
    # lbfgs stops at a gradient tolerance of 1e-4, so fits on features that differ in
    # the seventh digit (channels-last against plain layout, AVX2 against AVX-512
    # kernels) agree to a few 1e-4 (4.7e-4 seen), not to rounding; a wrong fold
    # (standardisation, intercept, class order) is off by far more
    np.testing.assert_allclose(seen["proba"], _probe_reference(weights, X, y), atol=2e-3)
    assert clone(net).get_params()["head_init"] == "probe"


def test_probe_head_with_missing_classes_and_continued_training(data, weights):
    X, y = data
    two = y < 2   # class 2 never labelled: it gets the lowest logit, the others the probe's
    net = CNNClassifier(n_classes=3, max_epochs=1, lr=0.0, lr_schedule=None,
                        init_weights=weights, head_init="probe", random_state=0)
    proba = net.fit(X[two], y[two]).predict_proba(X[two])
    assert (proba[:, 2] < 1e-3).all()
    assert (proba[:, :2].argmax(1) == y[two]).mean() > 0.7
    head = find_head(net.module_).weight.detach().clone()
    net.partial_fit(X, y)      # continuing: the head is kept, not probed again
    assert torch.equal(find_head(net.module_).weight, head)


def test_probe_scale_by_hand():
    F = np.column_stack([np.r_[0.0, 2.0], np.r_[0.0, 4.0], np.r_[0.0, 6.0], np.r_[0.0, 0.02]])
    # standard deviations 1, 2, 3, 0.01; median 1.5
    np.testing.assert_allclose(probe_scale(F, 0), [1, 2, 3, 0.01], atol=2e-6)
    np.testing.assert_allclose(probe_scale(F, 1.0), [1.5, 2, 3, 1.5], atol=2e-6)
    np.testing.assert_allclose(probe_scale(F, 0.5), [1, 2, 3, 0.75], atol=2e-6)
    assert probe_scale(np.zeros((3, 2)), 1.0).min() > 0     # constant features: no 0 / 0


def _nearly_dead(weights, channels):
    """The warm start with some last-layer channels that barely vary (BN scale ~0)."""
    state = {k: v.clone() for k, v in weights.state.items()}
    state["features.9.weight"][channels] = 1e-3
    return EncoderWeights(state, weights.info)


def test_probe_head_keeps_nearly_dead_channels_small(data, weights):
    # Exactly standardised, a channel that barely varies is blown up to unit variance
    # and folds into a huge weight; the floor keeps it near a typical feature's.
    X, y = data
    dead = np.arange(8)
    warm = _nearly_dead(weights, dead)
    kw = dict(n_classes=3, max_epochs=1, lr=0.0, lr_schedule=None, init_weights=warm,
              random_state=0)
    floored = CNNClassifier(**kw, head_init="probe").fit(X, y)
    exact = CNNClassifier(**kw, callbacks=[("probe", ProbeHead(sd_floor=0))]).fit(X, y)
    w_floor = find_head(floored.module_).weight.detach().abs().numpy()
    w_exact = find_head(exact.module_).weight.detach().abs().numpy()
    live = np.setdiff1d(np.arange(w_floor.shape[1]), dead)
    assert w_exact[:, dead].max() > 20 * w_exact[:, live].max()
    assert w_floor[:, dead].max() < w_floor[:, live].max()
    # both still start from a probe that fits the labels
    for net in (floored, exact):
        assert (net.predict(X) == y).mean() > 0.6


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "1", True, None])
def test_bad_sd_floor_is_refused_before_training(data, weights, value):
    X, y = data
    net = CNNClassifier(n_classes=3, max_epochs=1, init_weights=weights,
                        callbacks=[("probe", ProbeHead(sd_floor=value))])
    with pytest.raises(ValueError, match="sd_floor must be a finite number >= 0"):
        net.fit(X, y)
    assert not getattr(net, "initialized_", False)
    with pytest.raises(ValueError, match="sd_floor"):
        probe_scale(np.ones((3, 2)), value)


def test_bad_head_init_is_refused(data):
    with pytest.raises(ValueError, match="head_init must be one of 'random', 'probe'"):
        CNNClassifier(n_classes=3, head_init="linear").fit(*data)


def test_a_warm_start_with_a_random_head_says_what_it_leaves_out(data, weights):
    """Issue 38, part 5: init_weights at the other defaults warns; the recipe does not."""
    import warnings

    from xal_sklearn.finetune import WarmStartWarning

    X, y = data[:2]
    with pytest.warns(WarmStartWarning, match="the probe head gave 0.795 against 0.713"):
        CNNClassifier(n_classes=3, max_epochs=1, init_weights=weights).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WarmStartWarning)
        for params in ({"head_init": "probe"}, {"freeze_epochs": 1}, {}):
            extra = {"init_weights": weights, **params} if params else {}
            CNNClassifier(n_classes=3, max_epochs=1, **extra).fit(X, y)
