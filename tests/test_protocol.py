"""Experiment protocol: explicit test sets, the strategies' own scores, ALC and paired verdicts."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xal_sklearn import (ActiveLearner, CNNClassifier, dual_criterion_sampling, score_pool,
                         uncertainty_sampling)
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.experiments import learning_curve_area, paired_comparison, run_experiment
from xal_sklearn.uncertainty import normalized_uncertainty


def _table(values, strategies=("random", "dual")):
    """Hand-made results: values[strategy] = list over seeds of lists over rounds."""
    rows = []
    for name in strategies:
        for seed, curve in enumerate(values[name]):
            for r, v in enumerate(curve):
                rows.append({"strategy": name, "seed": seed, "n_labelled": 10 + 10 * r,
                             "accuracy": v})
    return pd.DataFrame(rows)


def test_learning_curve_area_hand_computed():
    t = _table({"random": [[0.5, 0.7, 0.7]], "dual": [[0.6, 0.6, 1.0]]})
    alc = learning_curve_area(t).set_index("strategy")["alc"]
    # trapezoids over [10, 30]: (0.6 + 0.7) / 2 / 2 + ... = mean of the two segment means
    assert alc["random"] == pytest.approx(((0.5 + 0.7) / 2 + (0.7 + 0.7) / 2) / 2)
    assert alc["dual"] == pytest.approx(((0.6 + 0.6) / 2 + (0.6 + 1.0) / 2) / 2)


def test_paired_comparison_known_answers():
    diffs = np.array([0.02, 0.03, 0.01, 0.04, 0.05])
    base = np.array([0.6, 0.7, 0.65, 0.5, 0.55])
    t = _table({"random": [[0.4, b] for b in base], "dual": [[0.4, b + d]
                                                             for b, d in zip(base, diffs)]})
    row = paired_comparison(t, "accuracy", "random").iloc[0]
    assert row["mean_difference"] == pytest.approx(diffs.mean())
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(diffs).pvalue) == 0.0625
    assert 0 < row["ci_low"] <= diffs.mean() <= row["ci_high"] <= diffs.max()
    assert row["verdict"] == "better"
    mixed = _table({"random": [[0.4, b] for b in base],
                    "dual": [[0.4, b + d] for b, d in zip(base, diffs * [1, -1, 1, -1, 1])]})
    assert paired_comparison(mixed, "accuracy", "random").iloc[0]["verdict"] == \
        "no detectable difference"
    worse = _table({"random": [[0.4, b] for b in base], "dual": [[0.4, b - d]
                                                                 for b, d in zip(base, diffs)]})
    assert paired_comparison(worse, "accuracy", "random").iloc[0]["verdict"] == "worse"
    with pytest.raises(ValueError, match="Reference strategy 'entropy' is not in the results"):
        paired_comparison(t, "accuracy", "entropy")


@pytest.fixture(scope="module")
def shifted():
    pool = make_lesion_phantoms(90, 32, shortcut=0.9, random_state=0)
    test = make_lesion_phantoms(30, 32, shortcut=0.0, random_state=5)
    return pool, test


def test_explicit_test_set_is_never_queried_nor_mixed_with_the_pool(shifted, tmp_path):
    pool, test = shifted
    net = CNNClassifier(n_classes=3, max_epochs=2, batch_size=16)
    table = run_experiment(net, pool, {"dual": (dual_criterion_sampling, {"alpha": 0.3})},
                           initial_size=10, query_size=10, budget=30, seeds=[0], test_set=test,
                           out_dir=tmp_path / "r")
    queried = sum((json.loads(q) for q in table["queried"]), [])
    assert len(queried) == 20 and max(queried) < len(pool.y)
    # the reported accuracy is the accuracy on the test set, not on pool images
    final = table.iloc[-1]
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["test_set"]["n_samples"] == 30
    assert 0 <= final["accuracy"] <= 1 and final["n_labelled"] == 30
    # with a test set the pool needs no groups (a pool of one split's images), and the
    # run is the same
    no_groups = {k: v for k, v in pool.items() if k != "groups"}
    again = run_experiment(net, no_groups, {"dual": (dual_criterion_sampling, {"alpha": 0.3})},
                           initial_size=10, query_size=10, budget=30, seeds=[0], test_set=test,
                           out_dir=tmp_path / "r2")
    np.testing.assert_array_equal(again["accuracy"], table["accuracy"])


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("roi_available"), "test_set lacks \\['roi_available'\\]"),
    (lambda t: t.__setitem__("X", t["X"][:, :, :16]), "test_set images have shape"),
    (lambda t: t.__setitem__("y", np.full(len(t["y"]), 7)), "outside the training classes"),
])
def test_bad_test_set_refused_before_training(shifted, tmp_path, change, message):
    pool, test = shifted
    test = dict(test)
    change(test)
    with pytest.raises(ValueError, match=message):
        run_experiment(CNNClassifier(n_classes=3, max_epochs=1), pool,
                       {"dual": dual_criterion_sampling}, initial_size=10, query_size=10,
                       budget=20, seeds=[0], test_set=test, out_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("strategy, kwargs, expected", [
    (uncertainty_sampling, {"uncertainty": "entropy"}, "entropy"),
    (uncertainty_sampling, {"uncertainty": "margin"}, "margin"),
    (dual_criterion_sampling, {"alpha": 0.3, "uncertainty": "margin"}, "dual"),
])
def test_logged_scores_are_the_strategys_own(shifted, tmp_path, strategy, kwargs, expected):
    pool, test = shifted
    net = CNNClassifier(n_classes=3, max_epochs=2, batch_size=16, random_state=0)
    table = run_experiment(net, pool, {"s": (strategy, kwargs)}, initial_size=10,
                           query_size=8, budget=18, seeds=[0], test_set=test)
    row = table.iloc[1]
    chosen = np.array(json.loads(row["queried"]))
    logged_u = np.array(json.loads(row["queried_uncertainty"]), dtype=float)
    # refit the round-0 model exactly as the run did and score the chosen images
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=2, batch_size=16,
                                          random_state=0))
    rng = np.random.RandomState(0)
    initial = np.sort(rng.choice(np.arange(len(pool.y)), 10, replace=False))
    learner.fit(pool.X[initial], pool.y[initial], pool.roi_masks[initial])
    proba = learner.predict_proba(pool.X[chosen])
    measure = kwargs.get("uncertainty", "entropy")
    np.testing.assert_allclose(logged_u, normalized_uncertainty(proba, measure), atol=1e-5)
    if expected == "dual":
        s = score_pool(learner, pool.X[chosen], pool.roi_masks[chosen], alpha=0.3,
                       uncertainty="margin", progress=False)
        np.testing.assert_allclose(np.array(json.loads(row["queried_combined"]), dtype=float),
                                   s.combined, atol=1e-5)
        np.testing.assert_allclose(np.array(json.loads(row["queried_misalignment"]),
                                            dtype=float), s.misalignment, atol=1e-5)
    else:
        assert all(v is None for v in json.loads(row["queried_misalignment"]))


def test_uncertainty_sampling_ranks_like_modal(fitted_net, phantoms):
    from modAL.uncertainty import margin_sampling

    X = phantoms.X[160:220]
    ours = uncertainty_sampling(fitted_net, X, 10, uncertainty="margin", random_state=0)
    theirs = margin_sampling(fitted_net, X, n_instances=10)
    assert set(ours) == set(theirs)


def test_no_verdict_from_too_few_seeds():
    t = _table({"random": [[0.4, 0.5], [0.4, 0.6]], "dual": [[0.4, 0.6], [0.4, 0.7]]})
    row = paired_comparison(t, "accuracy", "random").iloc[0]
    assert row["mean_difference"] == pytest.approx(0.1)
    assert row["verdict"] == "too few seeds for a verdict (2 < 5)"
