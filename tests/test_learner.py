import pickle
import warnings

import numpy as np
import pytest
from modAL.models import ActiveLearner as ModALLearner
from modAL.uncertainty import entropy_sampling
from sklearn.base import clone

from xal_sklearn import (ActiveLearner, CNNClassifier, dual_criterion_sampling,
                         misalignment_sampling, random_sampling)


@pytest.fixture(scope="module")
def data(phantoms):
    X, y, M = phantoms.X, phantoms.y, phantoms.roi_masks
    return X[:30], y[:30], M[:30], X[160:], y[160:], M[160:]


def net():
    return CNNClassifier(n_classes=3, max_epochs=3, random_state=0)


def test_issue_example_workflow(data):
    X0, y0, M0, Xp, yp, Mp = data
    learner = ActiveLearner(net(), query_strategy=dual_criterion_sampling,
                            X_training=X0, y_training=y0, roi_training=M0, random_state=0)
    idx, X_q = learner.query(Xp, n_instances=5, roi_masks=Mp, alpha=0.3)
    assert idx.shape == (5,) and len(set(idx)) == 5
    np.testing.assert_array_equal(X_q, Xp[idx])
    learner.teach(Xp[idx], yp[idx], roi_masks=Mp[idx])
    assert len(learner.X_training_) == 35 and learner.roi_training_.shape == (35, 32, 32)
    np.testing.assert_array_equal(learner.roi_training_[30:], Mp[idx])
    assert learner.roi_available_.all()
    learner.teach(Xp[:2], yp[:2])  # no masks: kept as unavailable
    assert learner.roi_available_.sum() == 35 and len(learner.y_training_) == 37
    assert learner.predict_proba(Xp).shape == (len(Xp), 3)
    assert 0 <= learner.score(Xp, yp) <= 1
    np.testing.assert_array_equal(learner.predict(Xp), learner.estimator_.predict(Xp))
    assert learner.n_queries_ == 1


def test_same_strategy_in_modal_learner(data):
    X0, y0, M0, Xp, yp, Mp = data
    fitted = net().fit(X0, y0)
    modal = ModALLearner(estimator=fitted, query_strategy=dual_criterion_sampling)
    idx, _ = modal.query(Xp, n_instances=5, roi_masks=Mp, random_state=0)
    ours = dual_criterion_sampling(fitted, Xp, 5, roi_masks=Mp, random_state=0)
    np.testing.assert_array_equal(idx, ours)
    idx_m, _ = ModALLearner(estimator=fitted, query_strategy=misalignment_sampling).query(
        Xp, n_instances=3, roi_masks=Mp)
    assert len(set(idx_m)) == 3


def test_modal_strategies_work_unchanged(data):
    X0, y0, M0, Xp, yp, Mp = data
    learner = ActiveLearner(net(), query_strategy=entropy_sampling, X_training=X0, y_training=y0)
    idx, _ = learner.query(Xp, n_instances=4)
    assert set(idx) == set(entropy_sampling(learner.estimator_, Xp, n_instances=4))


def test_params_clone_repr_pickle(data):
    X0, y0, M0, Xp, yp, Mp = data
    learner = ActiveLearner(net(), X_training=X0, y_training=y0, random_state=1)
    params = learner.get_params()
    assert params["query_strategy"] is dual_criterion_sampling
    assert params["estimator__max_epochs"] == 3
    learner.set_params(estimator__max_epochs=2)
    assert learner.estimator.max_epochs == 2
    c = clone(learner)
    assert not hasattr(c, "estimator_") and c.get_params()["random_state"] == 1
    assert "ActiveLearner" in repr(learner)
    learner.query(Xp, n_instances=2)
    restored = pickle.loads(pickle.dumps(learner))
    np.testing.assert_allclose(restored.predict_proba(Xp), learner.predict_proba(Xp), atol=1e-6)


def test_strategy_called_once_per_query(data):
    X0, y0, M0, Xp, yp, Mp = data
    calls = []

    def counting(classifier, X_pool, n_instances=1, **kwargs):
        calls.append(kwargs)
        return np.arange(n_instances)

    learner = ActiveLearner(net(), query_strategy=counting, X_training=X0, y_training=y0)
    learner.query(Xp, n_instances=3, roi_masks=Mp)
    assert len(calls) == 1 and "roi_masks" in calls[0]
    assert "random_state" not in calls[0]  # only passed to strategies that take it


def test_random_state_makes_query_sequences_reproducible(data):
    X0, y0, M0, Xp, yp, Mp = data

    def run(seed):
        learner = ActiveLearner(net(), query_strategy=random_sampling, X_training=X0,
                                y_training=y0, random_state=seed)
        return [learner.query(Xp, n_instances=4)[0] for _ in range(3)]

    a, b = run(7), run(7)
    for qa, qb in zip(a, b):
        np.testing.assert_array_equal(qa, qb)
    assert not np.array_equal(a[0], a[1])  # the generator advances between queries
    assert not all(np.array_equal(x, z) for x, z in zip(a, run(8)))


def test_dual_learner_runs_reproducibly(data):
    X0, y0, M0, Xp, yp, Mp = data

    def run():
        learner = ActiveLearner(net(), X_training=X0, y_training=y0, random_state=0)
        idx, _ = learner.query(Xp, n_instances=4, roi_masks=Mp)
        learner.teach(Xp[idx], yp[idx], roi_masks=Mp[idx])
        return idx, learner.query(Xp, n_instances=4, roi_masks=Mp)[0]

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_only_new_continues_training(data):
    X0, y0, M0, Xp, yp, Mp = data
    learner = ActiveLearner(net(), X_training=X0, y_training=y0).fit(X0, y0)
    epochs = len(learner.estimator_.history_)
    before = learner.estimator_
    learner.teach(Xp[:5], yp[:5], only_new=True)
    assert len(learner.estimator_.history_) == epochs + 3 and learner.estimator_ is not before
    assert len(before.history_) == epochs  # the old model was not modified in place


def test_runs_on_current_sklearn_without_modal_faults(data):
    # modAL's own teach() fails on scikit-learn >= 1.8 (force_all_finite); ours must not
    X0, y0, M0, Xp, yp, Mp = data
    learner = ActiveLearner(net(), query_strategy=random_sampling)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        learner.teach(X0, y0)
        learner.teach(Xp[:3], yp[:3])
    assert len(learner.X_training_) == 33


def _state(learner):
    return (learner.X_training_.copy(), learner.y_training_.copy(), learner.roi_training_.copy(),
            learner.estimator_)


@pytest.mark.parametrize("call, error, message", [
    (lambda l, d: l.teach(d[3][:3], d[4][:2]), ValueError, "one label per image"),
    (lambda l, d: l.teach(d[3][:3], d[4][:3], roi_masks=d[5][:2]), ValueError, "2 masks"),
    (lambda l, d: l.teach(d[3][:3], d[4][:3], roi_masks=d[5][:3, :8]), ValueError,
     "spatial shape"),
    (lambda l, d: l.teach(np.full_like(d[3][:2], np.nan), d[4][:2]), ValueError, "NaN"),
    (lambda l, d: l.teach(d[3][:2, 0], d[4][:2]), ValueError, "image-shaped"),
    (lambda l, d: l.teach(d[3][:2], np.array([0, 9])), ValueError, "not in classes_"),
    (lambda l, d: l.query(d[3], n_instances=0), ValueError, ">= 1"),
    (lambda l, d: l.query(d[3], n_instances=1000), ValueError, "larger than the pool"),
    (lambda l, d: l.query(d[3], n_instances=2, alpha=-0.1), ValueError, "alpha"),
    (lambda l, d: l.query(d[3], n_instances=2, uncertainty="x"), ValueError, "Unknown uncertainty"),
    (lambda l, d: l.query(d[3], n_instances=2, roi_masks=d[5][:5]), ValueError, "5 masks"),
])
def test_bad_input_leaves_state_untouched(data, call, error, message):
    learner = ActiveLearner(net(), X_training=data[0], y_training=data[1], roi_training=data[2])
    learner.fit(data[0], data[1], data[2])
    before = _state(learner)
    with pytest.raises(error, match=message):
        call(learner, data)
    after = _state(learner)
    for a, b in zip(before[:3], after[:3]):
        np.testing.assert_array_equal(a, b)
    assert after[3] is before[3]


def test_unfitted_learner_errors(data):
    with pytest.raises(ValueError, match="no labelled data"):
        ActiveLearner(net()).query(data[3], n_instances=2)
    bad = ActiveLearner(net(), query_strategy=lambda c, X, n_instances=1: np.zeros(n_instances, int),
                        X_training=data[0], y_training=data[1])
    with pytest.raises(ValueError, match="distinct integer pool indices"):
        bad.query(data[3], n_instances=2)


def test_query_a_lazy_dataset_pool(data):
    import torch

    X0, y0, M0, Xp, yp, Mp = data

    class Pool(torch.utils.data.Dataset):
        def __len__(self):
            return len(Xp)

        def __getitem__(self, i):
            return Xp[i], Mp[i]

    learner = ActiveLearner(net(), X_training=X0, y_training=y0, random_state=0)
    idx, items = learner.query(Pool(), n_instances=4)
    ref = dual_criterion_sampling(learner, Xp, 4, roi_masks=Mp, random_state=0)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(items[0][0], Xp[idx[0]])


def test_save_load_round_trip_without_pickle(tmp_path, phantoms):
    import json

    from xal_sklearn import CNNClassifier
    from xal_sklearn._persist import FormatError

    X, y, M = phantoms.X[:40], phantoms.y[:40], phantoms.roi_masks[:40]
    template = CNNClassifier(n_classes=3, max_epochs=2, random_state=0)
    learner = ActiveLearner(template, random_state=3).fit(X[:20], y[:20], roi_masks=M[:20])
    learner.query(X[20:], n_instances=4, roi_masks=M[20:])
    learner.save(tmp_path / "l")
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == [
        "estimator.pt", "labelled.npz", "learner.json"]
    back = ActiveLearner.load(tmp_path / "l", template)
    np.testing.assert_array_equal(back.predict_proba(X[20:]), learner.predict_proba(X[20:]))
    np.testing.assert_array_equal(back.roi_training_, learner.roi_training_)
    # the query generator continues where it was: same next queries
    a, _ = learner.query(X[20:], n_instances=5, roi_masks=M[20:])
    b, _ = back.query(X[20:], n_instances=5, roi_masks=M[20:])
    assert list(a) == list(b) and back.n_queries_ == learner.n_queries_
    meta = json.loads((tmp_path / "l" / "learner.json").read_text())
    meta["version"] = 99
    (tmp_path / "l" / "learner.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="format version 99"):
        ActiveLearner.load(tmp_path / "l", template)
    learner.save(tmp_path / "n", include_data=False)
    with pytest.raises(ValueError, match="saved without its labelled images"):
        ActiveLearner.load(tmp_path / "n", template)
    assert ActiveLearner.load(tmp_path / "n", template, X_training=X[:20],
                              y_training=y[:20]).n_queries_ == learner.n_queries_
    # a template of another shape (the network before its context branch existed) is
    # named, with what to pass
    other = CNNClassifier(n_classes=3, max_epochs=2, module__context_channels=0)
    with pytest.raises(ValueError, match="estimator.pt were saved from a network of another "
                                         "shape.*features.8.weight.*module__context_channels=0"):
        ActiveLearner.load(tmp_path / "n", other,
                           X_training=X[:20], y_training=y[:20])


def test_loading_a_planted_pickle_runs_no_code(tmp_path, phantoms):
    import pickle

    from xal_sklearn import CNNClassifier

    template = CNNClassifier(n_classes=3, max_epochs=1)
    ActiveLearner(template).fit(phantoms.X[:10], phantoms.y[:10]).save(tmp_path / "l")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "l" / "estimator.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ActiveLearner.load(tmp_path / "l", template)
    assert not marker.exists()
