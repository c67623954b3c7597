import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from xal_sklearn import CNNClassifier, SmallCNN


@pytest.fixture(scope="module")
def data():
    from xal_sklearn.datasets import make_lesion_phantoms

    d = make_lesion_phantoms(90, image_size=32, n_classes=3, random_state=1)
    return d.X, d.y


def small(**kw):
    return CNNClassifier(n_classes=3, max_epochs=2, random_state=0, **kw)


def test_params_round_trip_and_clone():
    net = CNNClassifier(n_classes=3, lr=0.01, module__n_filters=(4, 8), device="auto",
                        gradcam_layer="features.3", random_state=3)
    params = net.get_params()
    assert params["device"] == "auto" and params["module__n_filters"] == (4, 8)
    assert params["iterator_train__shuffle"] is True
    cloned = clone(net)
    assert cloned.get_params()["lr"] == 0.01
    assert cloned.get_params()["gradcam_layer"] == "features.3"
    cloned.set_params(device="cpu", max_epochs=3)
    assert cloned.get_params()["device"] == "cpu" and cloned.max_epochs == 3
    assert net.device in ("cpu", "cuda")  # what skorch sees


def test_fit_predict_shapes_and_dtypes(data):
    X, y = data
    net = small().fit(X.astype(np.float64), y.astype(np.int32))
    proba = net.predict_proba(X[:10].astype(np.float64))
    assert proba.shape == (10, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert set(net.predict(X)) <= {0, 1, 2}
    assert net.n_channels_in_ == 1
    assert isinstance(net.module_, SmallCNN)


def test_missing_class_keeps_column_order(data):
    X, y = data
    keep = y != 1
    net = small().fit(X[keep], y[keep])
    assert net.predict_proba(X[:4]).shape == (4, 3)
    np.testing.assert_array_equal(net.classes_, [0, 1, 2])


def test_string_labels_and_explicit_classes(data):
    X, y = data
    names = np.array(["glioma", "meningioma", "pituitary"])[y]
    net = CNNClassifier(classes=["pituitary", "glioma", "meningioma"], max_epochs=2,
                        random_state=0).fit(X, names)
    assert set(net.predict(X)) <= set(names)
    assert net.score(X, names) > 0
    inferred = CNNClassifier(max_epochs=1, random_state=0).fit(X, names)
    np.testing.assert_array_equal(inferred.classes_, ["glioma", "meningioma", "pituitary"])
    with pytest.raises(ValueError, match="not in classes_.*'astrocytoma'"):
        net.fit(X[:3], ["astrocytoma", "glioma", "glioma"])


def test_random_state_makes_training_reproducible(data):
    X, y = data
    state = torch.get_rng_state()
    net_a = small().fit(X, y)
    assert torch.equal(state, torch.get_rng_state())  # fit leaves the global RNG alone
    a = net_a.predict_proba(X)
    b = small().fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = CNNClassifier(n_classes=3, max_epochs=2, random_state=1).fit(X, y).predict_proba(X)
    assert not np.allclose(a, c)


def test_sklearn_tools(data):
    X, y = data
    scores = cross_val_score(small(), X, y, cv=StratifiedKFold(3))
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))
    search = GridSearchCV(small(), {"lr": [1e-3, 3e-3], "module__n_filters": [(4, 8, 8)]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["lr"] in (1e-3, 3e-3)
    pipe = make_pipeline(FunctionTransformer(lambda a: (a - 0.5) * 2), small())
    pipe.fit(X, y)
    assert pipe.predict_proba(X[:5]).shape == (5, 3)


def test_pickle_round_trip(data):
    X, y = data
    net = small().fit(X, y)
    loaded = pickle.loads(pickle.dumps(net))
    np.testing.assert_allclose(loaded.predict_proba(X), net.predict_proba(X), atol=1e-6)
    assert loaded.get_params()["n_classes"] == 3


def test_custom_module_instance_and_multichannel():
    X = np.random.RandomState(0).rand(12, 3, 20, 24).astype(np.float32)
    y = np.arange(12) % 2
    net = CNNClassifier(SmallCNN, n_classes=2, max_epochs=1).fit(X, y)
    assert net.module_.features[0].in_channels == 3
    inst = CNNClassifier(SmallCNN(in_channels=3, n_classes=2), n_classes=2, max_epochs=1)
    assert inst.fit(X, y).predict_proba(X).shape == (12, 2)


def test_warm_start_and_partial_fit(data):
    X, y = data
    net = small(warm_start=True).fit(X, y)
    n_epochs = len(net.history_)
    net.fit(X, y)
    assert len(net.history_) == 2 * n_epochs
    net.partial_fit(X[:10], y[:10])
    assert len(net.history_) == 2 * n_epochs + 2


def test_train_split_validation_accuracy_with_string_labels(data):
    from skorch.dataset import ValidSplit

    X, y = data
    names = np.array(["a", "b", "c"])[y]
    net = CNNClassifier(classes=["a", "b", "c"], max_epochs=1, train_split=ValidSplit(3),
                        random_state=0).fit(X, names)
    assert 0 <= net.history_[-1, "valid_acc"] <= 1


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 8, 8)), "image-shaped"),
    (np.full((4, 1, 8, 8), np.nan), "NaN or infinite values in 4"),
    (np.array([["a"]]), "must hold numbers"),
])
def test_bad_images(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        small().fit(bad, np.zeros(len(bad), int))


def test_label_count_mismatch(data):
    X, y = data
    with pytest.raises(ValueError, match="90 samples but y has 89"):
        small().fit(X, y[:-1])


def test_cosine_schedule_by_default(data):
    X, y = data
    net = CNNClassifier(n_classes=3, max_epochs=4, lr=0.01, random_state=0).fit(X, y)
    lrs = [g["lr"] for g in net.optimizer_.param_groups]
    assert lrs[0] == pytest.approx(0.0, abs=1e-12)  # annealed to 0 after max_epochs
    const = CNNClassifier(n_classes=3, max_epochs=4, lr=0.01, lr_schedule=None).fit(X, y)
    assert const.optimizer_.param_groups[0]["lr"] == 0.01
    with pytest.raises(ValueError, match="lr_schedule must be"):
        CNNClassifier(n_classes=3, lr_schedule="step").fit(X, y)


def test_channels_last_cpu_path_predicts_like_the_plain_layout(fitted_net, phantoms):
    import copy

    plain = copy.deepcopy(fitted_net)
    plain.cpu_channels_last = False
    conv = fitted_net.module_.features[0]
    layouts = []
    handle = conv.register_forward_hook(lambda m, i, o: layouts.append(
        o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous()))
    try:
        ours = fitted_net.predict_proba(phantoms.X[:50])
    finally:
        handle.remove()
    assert layouts and all(layouts)  # predicted in channels-last layout
    np.testing.assert_allclose(ours, plain.predict_proba(phantoms.X[:50]), atol=1e-5)


# --- SmallCNN's context branch -------------------------------------------------------------

def test_smallcnn_context_branch_shape_and_parameter_count():
    plain = SmallCNN(n_classes=3, context_channels=0)
    split = SmallCNN(n_classes=3)  # the default: a quarter of the last block
    assert plain.context is None
    # the names of every earlier version: saved weights load
    assert [n for n, _ in plain.named_parameters()] == [
        "features.0.weight", "features.1.weight", "features.1.bias",
        "features.4.weight", "features.5.weight", "features.5.bias", "features.8.weight",
        "features.9.weight", "features.9.bias", "classifier.3.weight", "classifier.3.bias"]
    # the same convolution split in two: the same number of weights, the taught part first
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(split) == count(plain) == 23_603
    assert plain.default_gradcam_layer == split.default_gradcam_layer == "features.8"
    assert split.features[8].out_channels == 48 and split.context[0].out_channels == 16
    assert split.context[0].in_channels == split.features[8].in_channels == 32
    assert split.classifier[3].in_features == 64
    x = torch.randn(5, 1, 40, 24)
    assert split(x).shape == (5, 3)
    # the head reads both branches: cutting the context off changes the logits
    with torch.no_grad():
        split.eval()
        before = split(x)
        split.context[0].weight.zero_()
        assert not torch.allclose(before, split(x))


@pytest.mark.parametrize("given, n_filters, channels", [
    (0.25, (16, 32, 64), 16), (16, (16, 32, 64), 16), (0.0, (16, 32, 64), 0),
    (0.25, (4, 8), 2), (0.25, (4, 1), 0), (0.9, (4, 2), 1), (0.5, (3,), 2)])
def test_smallcnn_context_channels_as_a_number_or_a_share(given, n_filters, channels):
    net = SmallCNN(n_filters=n_filters, context_channels=given)
    assert (0 if net.context is None else net.context[0].out_channels) == channels
    taught = net.get_submodule(net.default_gradcam_layer)
    assert taught.out_channels == n_filters[-1] - channels >= 1
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 2)


@pytest.mark.parametrize("bad", [64, 80, -1, 1.0, -0.1, True, "16", None])
def test_smallcnn_refuses_a_context_branch_it_cannot_build(bad):
    with pytest.raises(ValueError, match="context_channels must be a whole number of channels "
                                         "from 0 to n_filters\\[-1\\] - 1 = 63.*a share of "
                                         "the last block in \\[0, 1\\); got "
                                         + repr(bad).replace(".", "\\.")):
        SmallCNN(context_channels=bad)


def test_context_branch_through_the_classifier_clone_grid_search_and_gradcam(data):
    from xal_sklearn import gradcam

    X, y = data
    net = small(module__context_channels=4)
    assert clone(net).get_params()["module__context_channels"] == 4
    net.fit(X, y)
    assert net.module_.context[0].out_channels == 4
    # Grad-CAM (and so scoring and the ROI loss) reads the taught block's convolution
    taught = net.module_.features[8]
    seen = []
    handle = taught.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    maps = gradcam(net, X[:3], progress=False)
    handle.remove()
    assert maps.shape == (3, 32, 32) and seen and seen[0][1] == 60
    grid = GridSearchCV(small(), {"module__context_channels": [0, 4]}, cv=2).fit(X, y)
    assert grid.best_estimator_.module_.features[8].out_channels in (64, 60)
    restored = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(restored.predict_proba(X[:8]), net.predict_proba(X[:8]))
