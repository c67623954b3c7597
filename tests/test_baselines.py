"""The field's baselines: embeddings from the scoring pass, scikit-activeml's strategies on
them, diversity for the dual criterion, and their references (autograd, brute force,
scikit-activeml's and modAL's own rankings)."""

import itertools
import json
import sys
import warnings

import numpy as np
import pytest
import torch
from modAL.uncertainty import entropy_sampling, margin_sampling
from modAL.uncertainty import uncertainty_sampling as modal_least_confident
from torch import nn

from xal_sklearn import (ActiveLearner, CNNClassifier, badge_sampling, bald_sampling,
                         coreset_sampling, dual_criterion_sampling, from_skactiveml,
                         pool_embeddings, probcover_sampling, score_pool, typiclust_sampling,
                         uncertainty_sampling)
from xal_sklearn.baselines import NoLabelledDataWarning
from xal_sklearn.embedding import EmbeddingError, gradient_embeddings, mc_dropout_proba
from xal_sklearn.strategies import diverse_top_k

skal = pytest.importorskip("skactiveml.pool")

BASELINES = [bald_sampling, badge_sampling, coreset_sampling, typiclust_sampling,
             probcover_sampling]


@pytest.fixture(scope="module")
def learner(phantoms):
    """An active learner with 60 labelled phantoms and dropout in front of its head."""
    net = CNNClassifier(n_classes=3, max_epochs=6, random_state=0, module__dropout=0.25)
    return ActiveLearner(net, X_training=phantoms.X[:60], y_training=phantoms.y[:60],
                         random_state=0).fit(phantoms.X[:60], phantoms.y[:60])


@pytest.fixture(scope="module")
def pool(phantoms):
    return phantoms.X[60:], phantoms.roi_masks[60:]


# --- one pass gives every strategy what it needs ------------------------------------------

def test_score_pool_embeddings_come_from_the_same_pass(learner, pool):
    X, M = pool
    plain = score_pool(learner, X, M)
    with_emb = score_pool(learner, X, M, embeddings="gradient")
    for field in ("proba", "uncertainty", "alignment", "combined"):
        np.testing.assert_array_equal(plain[field], with_emb[field])
    assert "embeddings" not in plain
    emb = pool_embeddings(learner, X, gradient=True)
    np.testing.assert_allclose(with_emb.embeddings, emb.embeddings, atol=1e-5)
    np.testing.assert_allclose(with_emb.gradient_embeddings, emb.gradient_embeddings, atol=1e-5)
    np.testing.assert_allclose(emb.proba, learner.predict_proba(X), atol=1e-6)
    assert emb.embeddings.shape == (len(X), 64) and emb.gradient_embeddings.shape == (len(X), 192)
    # the features are what the head sees: head(features) = logits
    head = learner.estimator_.module_.classifier[-1]
    with torch.no_grad():
        logits = head(torch.from_numpy(emb.embeddings))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), emb.proba, atol=1e-5)


def test_embeddings_stream_from_a_dataset(learner, pool):
    X, _ = pool
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X))

    class Items(torch.utils.data.Dataset):  # items are bare images
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i][0]

    np.testing.assert_allclose(pool_embeddings(learner, Items(), batch_size=7).embeddings,
                               pool_embeddings(learner, X).embeddings, atol=1e-5)


def test_badge_gradient_embedding_equals_autograd(learner, pool):
    X, _ = pool
    net = learner.estimator_
    emb = pool_embeddings(learner, X[:12], gradient=True)
    head = net.module_.classifier[-1]
    for i in range(12):
        h = torch.from_numpy(emb.embeddings[i:i + 1])
        w = head.weight.detach().clone().requires_grad_(True)
        logits = torch.nn.functional.linear(h, w, head.bias.detach())
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1))
        (grad,) = torch.autograd.grad(loss, w)
        np.testing.assert_allclose(emb.gradient_embeddings[i], grad.numpy().ravel(), atol=1e-6)


def test_gradient_embeddings_by_hand():
    proba = np.array([[0.7, 0.2, 0.1]])
    h = np.array([[2.0, -1.0]])
    # (p - onehot(0)) outer h = [-0.3, 0.2, 0.1] x [2, -1]
    np.testing.assert_allclose(gradient_embeddings(proba, h)[0],
                               [-0.6, 0.3, 0.4, -0.2, 0.2, -0.1], atol=1e-6)


class NoHead(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class LinearThenScale(nn.Module):  # the last Linear is not the output
    def __init__(self, **kw):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return 2.0 * self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("module, message", [(NoHead, "has no nn.Linear layer"),
                                             (LinearThenScale, "another layer follows it")])
def test_embedding_strategies_refuse_networks_without_a_linear_head(phantoms, module, message):
    net = CNNClassifier(module, n_classes=3, max_epochs=1, random_state=0)
    net.fit(phantoms.X[:30], phantoms.y[:30])
    with pytest.raises(EmbeddingError, match=message):
        pool_embeddings(net, phantoms.X[30:60])
    with pytest.raises(EmbeddingError, match=message):
        coreset_sampling(net, phantoms.X[30:60], 3, X_labeled=phantoms.X[:30],
                         y_labeled=phantoms.y[:30])
    with pytest.raises(EmbeddingError, match=message):
        dual_criterion_sampling(net, phantoms.X[30:60], 3, diversity="kcenter")


# --- MC dropout -----------------------------------------------------------------------------

def test_mc_dropout_on_the_head_is_mc_dropout_through_the_network(learner, pool):
    """SmallCNN's only dropout feeds its head, so sampling masks on the captured features
    has the distribution of whole-network MC dropout: compare the mean over many samples."""
    X, _ = pool
    n, reps = 4, 500
    emb = pool_embeddings(learner, X[:n]).embeddings
    ours = mc_dropout_proba(learner, emb, n_samples=reps, random_state=0).mean(0)
    module = learner.estimator_.module_
    module.eval()
    module.classifier[2].train()  # the dropout only: BatchNorm stays in eval mode
    torch.manual_seed(0)
    with torch.no_grad():  # every row of the repeated batch draws its own mask
        full = torch.softmax(module(torch.from_numpy(X[:n]).repeat(reps, 1, 1, 1)), 1)
    module.eval()
    full = full.reshape(reps, n, -1).mean(0).numpy()
    np.testing.assert_allclose(ours, full, atol=0.03)
    assert np.abs(ours - emb_proba(learner, X[:n])).max() > 1e-3  # dropout moved them
    assert not np.allclose(mc_dropout_proba(learner, emb, 2, 0)[0],
                           mc_dropout_proba(learner, emb, 2, 0)[1])  # masks differ per sample
    np.testing.assert_array_equal(mc_dropout_proba(learner, emb, 3, 5),
                                  mc_dropout_proba(learner, emb, 3, 5))


def emb_proba(learner, X):
    return learner.predict_proba(X)


def test_bald_refuses_a_network_without_dropout(fitted_net, pool):
    X, _ = pool
    with pytest.raises(EmbeddingError, match="module__dropout"):
        bald_sampling(fitted_net, X, 5, X_labeled=X[:5], y_labeled=np.zeros(5, int))


# --- the strategies --------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", BASELINES, ids=lambda f: f.__name__)
def test_baselines_select_distinct_pool_rows_reproducibly(learner, pool, strategy):
    X, M = pool
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoLabelledDataWarning)  # the learner's labels are used
        idx, scores = strategy(learner, X, 20, roi_masks=M, random_state=3, return_scores=True)
    assert len(idx) == 20 and len(set(idx)) == 20 and 0 <= idx.min() and idx.max() < len(X)
    np.testing.assert_array_equal(idx, strategy(learner, X, 20, random_state=3))
    assert np.isfinite(scores.combined).all() and np.isfinite(scores.uncertainty).all()


def test_a_learner_logs_the_baselines_own_scores(learner, pool):
    X, _ = pool
    through = ActiveLearner(learner.estimator, query_strategy=badge_sampling, random_state=3,
                            X_training=learner.X_training_, y_training=learner.y_training_)
    q, _ = through.query(X, n_instances=5)
    assert len(set(q)) == 5 and np.isfinite(through.query_scores_.combined).all()
    # BADGE's utility of a pick is its k-means++ sampling probability (the first is argmax)
    assert (through.query_scores_.combined > 0).all()


def test_adapter_equals_scikit_activeml_on_the_same_features(learner, pool):
    """The adapter hands scikit-activeml the features; calling it by hand gives the same rows."""
    X, _ = pool
    lab = pool_embeddings(learner, learner.X_training_).embeddings
    emb = pool_embeddings(learner, X).embeddings
    feats = np.concatenate([lab, emb]).astype(np.float64)
    y = np.concatenate([learner.y_training_.astype(float), np.full(len(X), np.nan)])
    rng = np.random.RandomState(7)
    seed = rng.randint(2**31 - 1)
    theirs = skal.CoreSet(random_state=seed).query(
        feats, y, candidates=np.arange(len(lab), len(feats)), batch_size=10)
    ours = from_skactiveml(skal.CoreSet())(learner, X, 10, random_state=7)
    np.testing.assert_array_equal(ours, np.asarray(theirs) - len(lab))


def test_coreset_is_k_center_greedy_by_hand(learner, pool):
    """Each pick is the pool image farthest from the labelled images and earlier picks."""
    X, _ = pool
    lab = pool_embeddings(learner, learner.X_training_).embeddings.astype(np.float64)
    emb = pool_embeddings(learner, X).embeddings.astype(np.float64)
    idx = coreset_sampling(learner, X, 6, random_state=0)
    centres = list(lab)
    for i in idx:
        d = np.min(np.linalg.norm(emb[:, None] - np.array(centres)[None], axis=2), axis=1)
        assert d[i] == pytest.approx(d.max(), rel=1e-6)
        centres.append(emb[i])


def _radius(points, centres):
    return np.max(np.min(np.linalg.norm(points[:, None] - points[centres][None], axis=2), 1))


@pytest.mark.parametrize("seed", range(5))
def test_k_center_greedy_is_within_twice_the_brute_force_optimum(seed):
    from xal_sklearn._skal import k_center

    pts = np.random.RandomState(seed).randn(11, 2)
    k = 3
    best = min(_radius(pts, list(c)) for c in itertools.combinations(range(len(pts)), k))
    greedy = k_center(pts, k, first=0, random_state=0)
    assert greedy[0] == 0 and len(set(greedy)) == k
    assert _radius(pts, list(greedy)) <= 2 * best + 1e-12
    # the best greedy start is no worse than the optimum's factor-2 bound for any start
    assert min(_radius(pts, list(k_center(pts, k, first=f))) for f in range(11)) <= 2 * best


def test_uncertainty_sampling_ranks_as_scikit_activeml_and_modal(fitted_net, pool):
    X, _ = pool
    proba = fitted_net.predict_proba(X)
    assert len(np.unique(proba.round(7), axis=0)) == len(X)  # no ties: orders are defined
    pairs = {"entropy": ("entropy", entropy_sampling),
             "margin": ("margin_sampling", margin_sampling),
             "least_confident": ("least_confident", modal_least_confident)}
    for ours_name, (their_name, modal_fn) in pairs.items():
        ours = uncertainty_sampling(fitted_net, X, 15, uncertainty=ours_name, random_state=0)
        u = skal.uncertainty_scores(proba, method=their_name)
        np.testing.assert_array_equal(ours, np.argsort(-u, kind="stable")[:15])
        assert set(ours) == set(modal_fn(fitted_net, X, n_instances=15))


def test_ties_are_broken_by_random_state(fitted_net):
    """Equal scores: the seed decides (not the index order), reproducibly."""
    X = np.repeat(np.zeros((1, 1, 32, 32), np.float32), 30, axis=0)  # identical images
    picks = {tuple(uncertainty_sampling(fitted_net, X, 3, random_state=s)) for s in range(6)}
    assert len(picks) > 1
    assert (uncertainty_sampling(fitted_net, X, 3, random_state=4)
            == uncertainty_sampling(fitted_net, X, 3, random_state=4)).all()


# --- diversity for the dual criterion ----------------------------------------------------------

@pytest.mark.parametrize("diversity", ["kcenter", "cluster"])
def test_diverse_dual_spreads_the_batch(learner, pool, diversity):
    X, M = pool
    emb = score_pool(learner, X, M, embeddings=True)
    plain = dual_criterion_sampling(learner, X, 10, roi_masks=M, random_state=0)
    spread = dual_criterion_sampling(learner, X, 10, roi_masks=M, random_state=0,
                                     diversity=diversity)
    assert len(set(spread)) == 10
    # drawn from the 5 x 10 best scores, best first, and further apart than the top 10
    top50 = set(np.argsort(-emb.combined)[:50])
    assert set(spread) <= top50
    assert (np.diff(emb.combined[spread]) <= 1e-12).all()

    def min_gap(idx):
        e = emb.embeddings[idx]
        d = np.linalg.norm(e[:, None] - e[None], axis=2)
        return d[np.triu_indices(len(idx), 1)].min()

    assert min_gap(spread) > min_gap(plain)
    # diversity_factor=1 is plain top-k
    np.testing.assert_array_equal(
        diverse_top_k(emb.combined, emb.embeddings, 10, diversity, 1, random_state=0),
        dual_criterion_sampling(learner, X, 10, roi_masks=M, random_state=0))


def test_diverse_top_k_clusters_pick_the_best_of_each():
    # two tight clusters; the 4 best scores all lie in cluster A
    emb = np.array([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [10, 10], [10.1, 10]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    # all 6 are candidates (2 x 3): the best of each cluster, and the farthest from the best
    assert list(diverse_top_k(scores, emb, 2, "cluster", 3, random_state=0)) == [0, 4]
    assert list(diverse_top_k(scores, emb, 2, "kcenter", 3, random_state=0)) == [0, 5]
    # a factor of 2 leaves only cluster A's four best: no spreading beyond them
    assert set(diverse_top_k(scores, emb, 2, "kcenter", 2, random_state=0)) <= {0, 1, 2, 3}


# --- bad input --------------------------------------------------------------------------------

def test_bad_input_is_named(learner, pool, fitted_net):
    X, M = pool
    with pytest.raises(ValueError, match="n_instances"):
        badge_sampling(learner, X[:5], 6)
    with pytest.raises(ValueError, match="Unknown diversity 'far'"):
        dual_criterion_sampling(learner, X, 3, diversity="far")
    with pytest.raises(ValueError, match="diversity_factor"):
        dual_criterion_sampling(learner, X, 3, diversity="kcenter", diversity_factor=0)
    with pytest.raises(TypeError, match="scikit-activeml query strategy"):
        from_skactiveml("Badge")
    with pytest.raises(ValueError, match='embeddings must be False, True or "gradient"'):
        score_pool(learner, X, M, embeddings="badge")
    with pytest.raises(ValueError, match="X_labeled needs y_labeled"):
        coreset_sampling(fitted_net, X, 3, X_labeled=X[:4])
    with pytest.warns(NoLabelledDataWarning, match="no labelled images are known"):
        coreset_sampling(fitted_net, X, 3)


def test_missing_scikit_activeml_says_how_to_get_it(learner, pool, monkeypatch):
    X, _ = pool
    for name in [m for m in sys.modules if m.split(".")[0] == "skactiveml"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "skactiveml", None)  # import fails
    monkeypatch.setitem(sys.modules, "skactiveml.pool", None)
    with pytest.raises(ImportError, match=r"pip install 'scikit-activeml>=1\.0\.1,<1\.1'"):
        badge_sampling(learner, X, 3)
    with pytest.raises(ImportError, match="scikit-activeml"):
        dual_criterion_sampling(learner, X, 3, diversity="kcenter")


# --- the harness and the CLI ------------------------------------------------------------------

def test_cli_runs_every_baseline_and_logs_their_scores(tmp_path, capsys):
    from xal_sklearn.cli import BALD_DROPOUT, STRATEGY_NAMES, _strategies, main
    from xal_sklearn.experiments import load_results

    arms = _strategies(["bald", "badge+roi", "dual_kcenter"], [0.3], "entropy", "soft_dice",
                       {"roi_loss": "dice", "roi_weight": 0.1})
    assert arms["bald"][2] == {"module__dropout": BALD_DROPOUT}  # MC dropout needs dropout
    assert arms["badge+roi"][0] is badge_sampling and arms["badge+roi"][2]["roi_loss"] == "dice"
    assert arms["dual_kcenter a=0.3"][1]["diversity"] == "kcenter"
    names = "bald,badge,coreset,typiclust,probcover,margin,least_confident,dual_cluster"
    out = tmp_path / "run"
    assert main(["run", "--strategies", names, "--n-samples", "90", "--image-size", "32",
          "--initial", "20", "--query-size", "10", "--budget", "30", "--epochs", "1",
          "--seeds", "1", "--out", str(out), "--no-progress"]) in (0, None)
    results = load_results(out)
    final = results[results.n_labelled == 30]
    assert sorted(final.strategy) == sorted(names.replace("dual_cluster", "dual_cluster a=0.3")
                                            .split(","))
    for name in ("bald", "badge", "coreset", "typiclust", "probcover"):
        logged = json.loads(final.loc[final.strategy == name, "queried_combined"].iloc[0])
        assert len(logged) == 10 and all(v is not None for v in logged), name
    assert "BALD (MC dropout)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--strategies", "badgee", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert "unknown strategy badgee" in err and all(n in err for n in STRATEGY_NAMES)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert all(n in help_text for n in ("typiclust", "probcover", "dual_kcenter"))
