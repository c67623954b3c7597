"""ROI-guided training (roi_loss) and the localisation metrics."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from torch import nn

from xal_sklearn import (ActiveLearner, CNNClassifier, mass_in_roi, pointing_game, roi_auc,
                         score_pool)
from xal_sklearn.alignment import ALIGNMENT_METRICS, chance_alignment
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.roi_loss import (RANK_MAX_CELLS, balanced_term, counterexamples,
                                  gradcam_from_activations, masks_to_grid, project_conflict,
                                  TERM_STEP_BOUND, roi_loss_term, step_term_apart,
                                  with_legacy_settings)


class GapNet(nn.Module):
    """Conv -> tanh -> global average pool -> linear, smooth for finite differences."""

    def __init__(self, in_channels=1, n_classes=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 3, 3, padding=1), nn.Tanh())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, n_classes))

    def forward(self, x):
        return self.head(self.features(x))


def _batch(seed=0, n=4, size=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g, dtype=torch.float64)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, 1:4, 2:5] = True
    return x, masks


@pytest.mark.parametrize("kind", ["dice", "outside", "rank"])
def test_gradcam_losses_match_finite_differences(kind):
    torch.manual_seed(0)
    net = GapNet().double()
    x, masks = _batch()
    target = torch.tensor([0, 1, 2, 0])

    def loss_of_activations(A):
        logits = net.head(A)
        return roi_loss_term(kind, x=x, logits=logits, activations=A, target=target,
                             masks=masks, has_roi=torch.ones(4, dtype=torch.bool))

    A = net.features(x).detach().requires_grad_(True)
    # with a global-pooling + linear head the Grad-CAM weights are the head's weights, so the
    # first-order gradient is the exact one and finite differences must agree
    assert torch.autograd.gradcheck(loss_of_activations, (A,), eps=1e-6, atol=1e-5)


def test_rrr_loss_matches_finite_differences():
    torch.manual_seed(0)
    net = GapNet().double()
    x, masks = _batch(1)

    def loss_of_input(inp):
        return roi_loss_term("rrr", x=inp, logits=net(inp), activations=None,
                             target=torch.zeros(4, dtype=torch.long), masks=masks,
                             has_roi=torch.ones(4, dtype=torch.bool))

    assert torch.autograd.gradcheck(loss_of_input, (x.clone().requires_grad_(True),),
                                    eps=1e-6, atol=1e-5)


def test_differentiable_gradcam_equals_captum_maps(tiny_net):
    from xal_sklearn import gradcam

    net, X = tiny_net
    module = net.module_.eval()
    captured = {}
    def keep(m, i, o):  # as CNNClassifier's training step does: in-place ReLUs follow
        captured["A"] = o
        return o.clone()

    handle = module.features[3].register_forward_hook(keep)
    x = torch.from_numpy(X[:5])
    logits = module(x)
    handle.remove()
    target = logits.argmax(1)
    cam = gradcam_from_activations(captured["A"], logits, target).detach()
    up = torch.nn.functional.interpolate(cam[:, None], size=X.shape[2:], mode="bilinear")[:, 0]
    peak = up.reshape(5, -1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    np.testing.assert_allclose((up / peak).numpy(), gradcam(net, X[:5], layer="features.3"),
                               atol=1e-5)


def _rank_of(cam, masks):
    """The rank term for given pre-ReLU maps, through a linear 'network' A -> A."""
    A = cam[:, None].clone().requires_grad_(True)
    logits = A.mean((2, 3))  # one class whose Grad-CAM is exactly A
    return roi_loss_term("rank", x=None, logits=logits, activations=A,
                         target=torch.zeros(len(cam), dtype=torch.long), masks=masks,
                         has_roi=torch.ones(len(cam), dtype=torch.bool))


def test_rank_loss_hand_computed_and_invariant_to_scale_and_shift():
    cam = torch.tensor([[[3.0, 1.0], [0.0, -1.0]]], dtype=torch.float64)
    masks = torch.tensor([[[True, False], [False, False]]])
    c = cam.flatten().numpy()
    s = (c - c.mean()) / c.std()
    expected = np.mean([np.log1p(np.exp(s[j] - s[0])) for j in (1, 2, 3)])
    assert _rank_of(cam, masks).item() == pytest.approx(expected, rel=1e-12)
    assert _rank_of(7 * cam - 2, masks).item() == pytest.approx(expected, rel=1e-12)
    # the ROI cell ranked last costs more than ranked first
    assert _rank_of(-cam, masks).item() > expected + 1
    # a mask covering everything (or nothing) has no pairs: no loss
    assert _rank_of(cam, torch.ones_like(masks)).item() == 0
    # a 1 x 1 attention grid (a deep backbone on small images) gives 0, not NaN
    assert _rank_of(cam[:, :1, :1], masks[:, :1, :1]).item() == 0


def test_rank_loss_area_averages_maps_larger_than_its_cell_limit():
    g = torch.Generator().manual_seed(0)
    side = 64  # 4096 cells > RANK_MAX_CELLS
    cam = torch.randn(2, side, side, generator=g, dtype=torch.float64)
    masks = torch.zeros(2, side, side, dtype=torch.bool)
    masks[:, 10:30, 20:40] = True
    coarse_side = int(np.sqrt(RANK_MAX_CELLS))
    pooled = torch.nn.functional.adaptive_avg_pool2d(cam[:, None], coarse_side)[:, 0]
    pooled_masks = torch.nn.functional.adaptive_avg_pool2d(
        masks[:, None].double(), coarse_side)[:, 0]
    c = pooled.reshape(2, -1)
    s = (c - c.mean(1, keepdim=True)) / c.std(1, correction=0, keepdim=True)
    m = pooled_masks.reshape(2, -1)
    pairs = m[:, :, None] * (1 - m)[:, None, :]
    per = torch.nn.functional.softplus(s[:, None, :] - s[:, :, None])
    expected = ((pairs * per).sum((1, 2)) / pairs.sum((1, 2))).mean()
    assert _rank_of(cam, masks).item() == pytest.approx(expected.item(), rel=1e-10)


def test_counterexamples_keep_the_roi_and_take_the_next_images_context():
    x = torch.arange(3 * 16, dtype=torch.float32).reshape(3, 1, 4, 4)
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = masks[2, 3, 3] = True  # image 1 has no ROI
    has = torch.tensor([True, False, True])
    out = counterexamples(x, masks, has)
    assert out.shape == (2, 1, 4, 4)
    expected0 = x[2].clone()
    expected0[0, 3, 3] = 0  # image 2's own ROI is blacked out in the context it lends
    expected0[0, 0, 0] = x[0, 0, 0, 0]
    expected1 = x[0].clone()
    expected1[0, 0, 0] = 0
    expected1[0, 3, 3] = x[2, 0, 3, 3]
    assert torch.equal(out[0], expected0) and torch.equal(out[1], expected1)
    grown = counterexamples(x, masks, has, dilation=1)
    assert torch.equal(grown[0, 0, :2, :2], x[0, 0, :2, :2])
    # one image with an ROI: its counterexample is itself
    single = torch.tensor([True, False, False])
    assert torch.equal(counterexamples(x, masks, single)[0], x[0])


def test_counterexample_term_is_the_cross_entropy_of_the_counterexamples():
    torch.manual_seed(0)
    net = GapNet().double()
    x, masks = _batch(2)
    target = torch.tensor([0, 1, 2, 1])
    has = torch.tensor([True, True, False, True])
    term = roi_loss_term("counterexample", x=x, logits=net(x), activations=None,
                         target=target, masks=masks, has_roi=has, forward=net)
    expected = torch.nn.functional.cross_entropy(net(counterexamples(x, masks, has)),
                                                 target[has])
    assert term.item() == pytest.approx(expected.item(), rel=1e-12)


def test_ce_balance_gives_the_term_the_stated_share_at_every_step():
    ce = torch.tensor(0.8, requires_grad=True)
    term = torch.tensor(0.05, requires_grad=True)
    added = balanced_term(term, ce, 0.5, "ce")
    assert added.item() == pytest.approx(0.4)  # roi_weight x the cross-entropy
    added.backward()
    assert term.grad.item() == pytest.approx(0.5 * 0.8 / 0.05) and ce.grad is None
    assert balanced_term(term, ce, 0.5, "fixed").item() == pytest.approx(0.025)
    tiny = torch.tensor(1e-9, requires_grad=True)  # a satisfied term is not blown up
    balanced_term(tiny, ce, 1.0, "ce").backward()
    assert tiny.grad.item() <= 0.8 / 1e-3 + 1e-6


def test_the_attention_term_share_in_a_real_training_step(phantoms):
    X, y, M = phantoms.X[:32], phantoms.y[:32], phantoms.roi_masks[:32]
    seen = []

    class Spy(CNNClassifier):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            total = super().get_loss(y_pred, y_true, X=X, training=training)
            if training:
                plain = super(CNNClassifier, self).get_loss(y_pred, y_true)
                seen.append((total.item(), plain.item()))
            return total

    Spy(n_classes=3, max_epochs=1, batch_size=32, roi_loss="rank", roi_weight=0.5,
        random_state=0).fit(X, y, roi_masks=M)
    total, plain = seen[0]
    assert total == pytest.approx(1.5 * plain, rel=1e-5)  # the term is half the CE


@pytest.mark.parametrize("warmup, max_epochs, epochs_without", [(2, 4, 2), (0.5, 4, 2),
                                                                 (0.25, 6, 2), (0, 3, 0)])
def test_roi_warmup_in_epochs_or_as_a_share_of_max_epochs(phantoms, warmup, max_epochs,
                                                          epochs_without):
    X, y, M = phantoms.X[:32], phantoms.y[:32], phantoms.roi_masks[:32]
    active = []

    class Spy(CNNClassifier):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            if training:
                active.append((len(self.history), isinstance(X, dict) and "activations" in X))
            return super().get_loss(y_pred, y_true, X=X, training=training)

    Spy(n_classes=3, max_epochs=max_epochs, batch_size=32, roi_loss="rank",
        roi_warmup=warmup, random_state=0).fit(X, y, roi_masks=M)
    assert [with_roi for _, with_roi in active] == (
        [False] * epochs_without + [True] * (max_epochs - epochs_without))


def test_project_conflict_hand_computed():
    ce = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    against = [torch.tensor([-1.0, 1.0]), torch.tensor([2.0])]  # dot -1: loses -1 x g_ce
    out = project_conflict(ce, against)
    assert [t.tolist() for t in out] == [[1.0, 1.0], [2.0]]
    along = [torch.tensor([1.0, 1.0]), torch.tensor([-3.0])]  # dot +1: kept as it is
    assert [t.tolist() for t in project_conflict(ce, along)] == [[2.0, 1.0], [-3.0]]
    zero = [torch.zeros(2), torch.zeros(1)]  # no cross-entropy gradient: nothing to remove
    assert [t.tolist() for t in project_conflict(zero, against)] == [[-1.0, 1.0], [2.0]]


@pytest.mark.parametrize("conflict", ["separate", "project", "sum"])
def test_training_steps_take_the_projected_gradient(phantoms, conflict):
    # plain SGD without momentum: a step moves every weight by -lr x its gradient (with
    # "separate" in two steps, the term's after the optimizer's, adding up to the same)
    X, y, M = phantoms.X[:32], phantoms.y[:32], phantoms.roi_masks[:32]
    steps = []  # (weights before the step, cross-entropy gradient, whole loss's gradient)

    class Spy(CNNClassifier):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            total = super().get_loss(y_pred, y_true, X=X, training=training)
            if training and isinstance(X, dict) and "activations" in X:
                ce = super(CNNClassifier, self).get_loss(y_pred, y_true)
                params = list(self.module_.parameters())
                steps.append(([p.detach().clone() for p in params],
                              *(torch.autograd.grad(v, params, retain_graph=True)
                                for v in (ce, total))))
            return total

    lr = 0.1
    # the network without a context branch, whose term and cross-entropy conflict here
    net = Spy(n_classes=3, max_epochs=6, batch_size=32, roi_loss="rank", roi_weight=3.0,
              roi_warmup=0, roi_conflict=conflict, optimizer=torch.optim.SGD, lr=lr,
              lr_schedule=None, random_state=2, module__context_channels=0)
    net.fit(X, y)  # cross-entropy first: early on the two gradients agree
    net.partial_fit(X, y, roi_masks=M)
    after = [s[0] for s in steps[1:]] + [[p.detach() for p in net.module_.parameters()]]
    conflicts = 0
    for (before, g_ce, g_all), later in zip(steps, after):
        g_term = [b - a for a, b in zip(g_ce, g_all)]
        conflicts += bool(sum((a * b).sum() for a, b in zip(g_ce, g_term)) < 0)
        expected = project_conflict(g_ce, g_term) if conflict != "sum" else g_all
        for b, p, g in zip(before, later, expected):
            torch.testing.assert_close((b - p) / lr, g, rtol=1e-3, atol=1e-5)
        if conflict != "sum":  # to first order a step never raises the cross-entropy
            assert sum((a * g).sum() for a, g in zip(g_ce, expected)) >= -1e-6
    assert len(steps) == 6 and conflicts >= 1  # the projection was exercised


def test_step_term_apart_hand_computed():
    # Adam after one step on g: v_hat = g^2 exactly, so the term t moves the weight by
    # -lr x t / (|g| + eps); the optimizer's own statistics are left as they were
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    adam = torch.optim.Adam([w], lr=0.1, eps=1e-8)
    w.grad = torch.tensor([0.5, -4.0])
    adam.step()
    after_adam, v = w.detach().clone(), adam.state[w]["exp_avg_sq"].clone()
    torch.testing.assert_close(after_adam, torch.tensor([0.9, -1.9]))  # Adam's sign step
    step_term_apart(adam, [(w, torch.tensor([1.0, 2.0]))])
    torch.testing.assert_close(w.detach(), after_adam - 0.1 * torch.tensor([1 / 0.5, 2 / 4.0]))
    assert torch.equal(adam.state[w]["exp_avg_sq"], v)
    # a weight the cross-entropy never moved (second moment 0) takes a bounded step
    u = torch.nn.Parameter(torch.zeros(2))
    adam = torch.optim.Adam([u], lr=0.1)
    u.grad = torch.zeros(2)
    adam.step()
    step_term_apart(adam, [(u, torch.tensor([1.0, -1e-12]))])
    torch.testing.assert_close(u.detach(), torch.tensor([-0.1 * TERM_STEP_BOUND, 1e-5]))
    # an optimizer without a second moment takes a plain step at its group's rate
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 2.0}])
    step_term_apart(sgd, [(a, torch.ones(1)), (b, torch.ones(1))])
    assert (a.item(), b.item()) == (-0.5, -2.0)


def test_separate_keeps_the_term_out_of_adams_statistics(phantoms):
    # one full-batch step from the same weights: Adam's second moment under "separate"
    # is the cross-entropy's alone (as without an ROI loss); "project" lets the term in
    X, y, M = phantoms.X[:32], phantoms.y[:32], phantoms.roi_masks[:32]
    kw = dict(n_classes=3, max_epochs=1, batch_size=32, random_state=0, lr_schedule=None)
    nets = {name: CNNClassifier(**kw, **extra).fit(X, y, **masks) for name, extra, masks in (
        ("none", {}, {}),
        ("separate", dict(roi_loss="rank", roi_warmup=0, roi_conflict="separate"),
         {"roi_masks": M}),
        ("project", dict(roi_loss="rank", roi_warmup=0, roi_conflict="project"),
         {"roi_masks": M}))}
    moments = {name: [net.optimizer_.state[p]["exp_avg_sq"] for p in net.module_.parameters()]
               for name, net in nets.items()}
    for a, b in zip(moments["none"], moments["separate"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-12)
    assert any(not torch.allclose(a, b, rtol=1e-3)
               for a, b in zip(moments["none"], moments["project"]))
    # and the term did move the weights
    assert any(not torch.equal(a, b) for a, b in zip(nets["none"].module_.parameters(),
                                                    nets["separate"].module_.parameters()))
    assert nets["separate"]._term_grads is None  # nothing left over for a later step


def test_batch_without_roi_gives_exactly_cross_entropy():
    logits = torch.randn(4, 3, requires_grad=True)
    term = roi_loss_term("dice", x=None, logits=logits, activations=None,
                         target=torch.zeros(4, dtype=torch.long),
                         masks=torch.zeros(4, 6, 6, dtype=torch.bool),
                         has_roi=torch.zeros(4, dtype=torch.bool))
    assert term.item() == 0.0 and not term.requires_grad


def test_empty_masks_train_exactly_like_no_roi_loss(phantoms):
    X, y = phantoms.X[:64], phantoms.y[:64]
    plain = CNNClassifier(n_classes=3, max_epochs=2, random_state=0).fit(X, y)
    guided = CNNClassifier(n_classes=3, max_epochs=2, random_state=0, roi_loss="dice")
    guided.fit(X, y, roi_masks=np.zeros((64,) + X.shape[2:], bool))
    assert plain.history[:, "train_loss"] == guided.history[:, "train_loss"]
    for a, b in zip(plain.module_.parameters(), guided.module_.parameters()):
        assert torch.equal(a, b)


def test_masks_to_grid_area_average_and_dilation():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 0, 0] = True
    grid = masks_to_grid(m, (2, 2))
    assert grid[0, 0, 0].item() == pytest.approx(0.25) and grid[0, 1, 1].item() == 0
    assert masks_to_grid(m, (2, 2), dilation=1)[0].min().item() == pytest.approx(0.25)


@pytest.mark.slow
def test_roi_loss_moves_attention_off_a_decoy_marker():
    # the corner marker always agrees with the label: a net can read it instead of the lesion
    train = make_lesion_phantoms(240, 32, shortcut=1.0, random_state=0)
    test = make_lesion_phantoms(120, 32, shortcut=0.0, random_state=1)
    settings = {"none": {}, "rank": {"roi_loss": "rank"},  # the recommended defaults
                # dice at the reference method's fixed weight, as before the new defaults
                "dice": {"roi_loss": "dice", "roi_weight": 0.1, "roi_balance": "fixed",
                         "roi_dilation": 0, "roi_warmup": 0}}
    mass = {}
    for name, params in settings.items():
        net = CNNClassifier(n_classes=3, max_epochs=12, random_state=0, **params)
        net.fit(train.X, train.y, roi_masks=train.roi_masks if params else None)
        s = score_pool(net, test.X, test.roi_masks, alignment="mass_in_roi", progress=False)
        mass[name] = np.nanmean(s.alignment)
    # measured: none 0.044, rank 0.081, dice 0.105
    assert mass["rank"] > 1.5 * mass["none"] and mass["dice"] > 1.5 * mass["none"], mass


def test_counterexamples_beat_a_shortcut_that_decides_the_label():
    # the corner marker always agrees with the label and the lesion is hard to see: a
    # network trained on cross-entropy reads the marker and fails on marker-free images
    gains = []
    for seed in (0, 1):
        train = make_lesion_phantoms(160, 32, shortcut=1.0, noise=0.15, random_state=seed)
        test = make_lesion_phantoms(200, 32, shortcut=0.0, noise=0.15, random_state=seed + 100)
        acc = {}
        for loss in (None, "counterexample"):
            net = CNNClassifier(n_classes=3, max_epochs=12, random_state=seed, roi_loss=loss)
            net.fit(train.X, train.y, roi_masks=train.roi_masks if loss else None)
            acc[loss] = np.mean(net.predict(test.X) == test.y)
        gains.append(acc["counterexample"] - acc[None])
    # measured: +0.175 and +0.185 (cross-entropy 0.425 and 0.375)
    assert min(gains) > 0.08, gains


def test_bad_roi_arguments(phantoms):
    X, y, M = phantoms.X[:20], phantoms.y[:20], phantoms.roi_masks[:20]
    with pytest.raises(ValueError, match="Unknown roi_loss 'gradmask'"):
        CNNClassifier(n_classes=3, roi_loss="gradmask").fit(X, y, roi_masks=M)
    for w in (-1.0, float("nan"), float("inf"), "a", "2", True, None):
        with pytest.raises(ValueError, match="roi_weight must be a finite number >= 0"):
            CNNClassifier(n_classes=3, roi_loss="dice", roi_weight=w).fit(X, y, roi_masks=M)
    with pytest.raises(ValueError, match="Unknown roi_balance 'cross'"):
        CNNClassifier(n_classes=3, roi_loss="rank", roi_balance="cross").fit(X, y, roi_masks=M)
    net = CNNClassifier(n_classes=3, roi_loss="rank", roi_conflict="pcgrad")
    with pytest.raises(ValueError, match="Unknown roi_conflict 'pcgrad'; choose one of"):
        net.fit(X, y, roi_masks=M)
    assert not net.initialized_
    for w in (-1, 1.0, 1.5, -0.1, True, "2"):
        net = CNNClassifier(n_classes=3, roi_loss="rank", roi_warmup=w)
        with pytest.raises(ValueError, match="roi_warmup must be"):
            net.fit(X, y, roi_masks=M)
        assert not net.initialized_
    net = CNNClassifier(n_classes=3, roi_loss="dice", max_epochs=1)
    with pytest.raises(ValueError, match="19 masks but X has 20"):
        net.fit(X, y, roi_masks=M[:19])
    with pytest.raises(ValueError, match="aspect"):
        net.fit(X, y, roi_masks=M[:, :, :20])
    assert not net.initialized_
    bad_layer = CNNClassifier(n_classes=3, roi_loss="dice", gradcam_layer="classifier.3",
                              max_epochs=1)
    with pytest.raises(ValueError, match="convolutional Grad-CAM layer"):
        bad_layer.fit(X, y, roi_masks=M)
    assert not bad_layer.initialized_
    fresh = CNNClassifier(n_classes=3, roi_loss="dice", max_epochs=1)
    with pytest.raises(ValueError, match=r"labels not in classes_.*\[7\]"):
        fresh.fit(X, np.where(np.arange(20) == 0, 7, y), roi_masks=M)
    assert not fresh.initialized_ and not hasattr(fresh, "image_shape_")
    with pytest.warns(UserWarning, match="ignored because roi_loss=None"):
        CNNClassifier(n_classes=3, max_epochs=1).fit(X, y, roi_masks=M)


def test_masks_at_another_resolution_and_with_none_entries(phantoms):
    X, y, M = phantoms.X[:24], phantoms.y[:24], phantoms.roi_masks[:24]
    half = M[:, ::2, ::2]
    net = CNNClassifier(n_classes=3, roi_loss="outside", max_epochs=1, random_state=0)
    net.fit(X, y, roi_masks=half)
    listed = [None if i % 2 else m for i, m in enumerate(M)]
    net.fit(X, y, roi_masks=listed)
    assert net.initialized_


def test_sklearn_tools_slice_masks_with_samples(phantoms):
    X, y, M = phantoms.X[:60], phantoms.y[:60], phantoms.roi_masks[:60]
    net = CNNClassifier(n_classes=3, roi_loss="dice", max_epochs=1, random_state=0)
    assert clone(net).get_params()["roi_loss"] == "dice"
    fitted = pickle.loads(pickle.dumps(clone(net).fit(X, y, roi_masks=M)))
    assert fitted.predict(X[:3]).shape == (3,)
    pipe = Pipeline([("scale", FunctionTransformer(lambda a: a * 1.0)), ("net", clone(net))])
    pipe.fit(X.astype(np.float64), y, net__roi_masks=M)
    scores = cross_val_score(clone(net), X, y, cv=3, params={"roi_masks": M})
    assert scores.shape == (3,)
    search = GridSearchCV(clone(net), {"roi_weight": [0.1, 1.0]}, cv=2)
    search.fit(X, y, roi_masks=M)
    assert search.best_params_["roi_weight"] in (0.1, 1.0)


def test_active_learner_passes_masks_only_to_estimators_that_take_them(phantoms):
    seen = []

    class Recording(CNNClassifier):
        def fit(self, X, y, roi_masks=None, **kw):
            seen.append(roi_masks)
            return super().fit(X, y, roi_masks=roi_masks, **kw)

    X, y, M = phantoms.X[:30], phantoms.y[:30], phantoms.roi_masks[:30]
    learner = ActiveLearner(Recording(n_classes=3, roi_loss="dice", max_epochs=1))
    learner.fit(X[:20], y[:20], roi_masks=M[:20])
    learner.teach(X[20:], y[20:], roi_masks=M[20:])
    assert len(seen) == 2 and seen[1].shape == (30,) + M.shape[1:]
    np.testing.assert_array_equal(seen[1], M)

    class NoMasks:  # a modAL-style estimator whose fit takes X, y only
        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def get_params(self, deep=True):
            return {}

        def set_params(self, **p):
            return self

    learner = ActiveLearner(NoMasks(), X_training=X, y_training=y, roi_training=M)
    learner.fit(X, y, roi_masks=M)
    assert list(learner.classes_) == [0, 1, 2]


# --- localisation metrics ------------------------------------------------------------

def test_roi_auc_equals_sklearn_per_sample(rng):
    maps = rng.rand(6, 9, 9).round(1)  # rounding makes ties
    masks = rng.rand(6, 9, 9) > 0.8
    expected = [roc_auc_score(m.ravel(), p.ravel()) for p, m in zip(maps, masks)]
    np.testing.assert_allclose(roi_auc(maps, masks), expected, atol=1e-12)


def test_roi_auc_edge_cases():
    maps = np.zeros((3, 4, 4))
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0, 0] = True  # blank map: every pixel tied -> 0.5
    masks[2] = True  # no background -> undefined
    got = roi_auc(maps, masks)
    assert got[0] == 0.5 and np.isnan(got[1]) and np.isnan(got[2])


def test_mass_in_roi_and_pointing_tolerance_hand_computed():
    maps = np.zeros((2, 5, 5))
    masks = np.zeros((2, 5, 5), bool)
    maps[0, 0, 0], maps[0, 4, 4] = 3.0, 1.0
    masks[0, 4, 4] = True
    assert mass_in_roi(maps, masks)[0] == pytest.approx(0.25)
    maps[1, 0, 0] = 1.0  # peak at (0, 0); mask at (2, 0): distance 2
    masks[1, 2, 0] = True
    assert pointing_game(maps, masks)[1] == 0.0
    assert pointing_game(maps, masks, tolerance=1.5)[1] == 0.0
    assert pointing_game(maps, masks, tolerance=2)[1] == 1.0
    for bad in (-1, float("nan"), float("inf"), "1", None):
        with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
            pointing_game(maps, masks, tolerance=bad)


def test_chance_levels_of_random_maps(rng):
    masks = np.zeros((200, 32, 32), bool)
    masks[:, 4:12, 4:12] = True  # area fraction 1/16
    assert chance_alignment(masks, "roi_auc", (8, 8)) == pytest.approx(0.5, abs=0.02)
    assert chance_alignment(masks, "mass_in_roi", (8, 8)) == pytest.approx(1 / 16, abs=0.01)
    assert chance_alignment(masks, "pointing_game", (8, 8)) == pytest.approx(1 / 16, abs=0.04)
    with pytest.raises(ValueError, match="Unknown alignment"):
        chance_alignment(masks, "accuracy")


def test_score_pool_reads_every_registered_metric(fitted_net, phantoms):
    X, M = phantoms.X[160:190], phantoms.roi_masks[160:190]
    maps = score_pool(fitted_net, X, M, return_maps=True, progress=False).maps
    for name in ALIGNMENT_METRICS:
        s = score_pool(fitted_net, X, M, alignment=name, progress=False)
        assert np.all((s.alignment >= 0) & (s.alignment <= 1))
        if name == "roi_auc":
            np.testing.assert_allclose(s.alignment, roi_auc(maps, M), atol=1e-6)
    with pytest.raises(ValueError, match="choose one of soft_dice"):
        score_pool(fitted_net, X, M, alignment="auc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score_pool(fitted_net, X, M, alignment="pointing_game", tolerance=2, progress=False)


def test_resolve_roi_settings_fills_defaults_and_refuses_like_the_classifier():
    from xal_sklearn.roi_loss import ROI_DEFAULTS, resolve_roi_settings

    defaults = {k: v for k, v in CNNClassifier().get_params().items() if k in ROI_DEFAULTS}
    assert defaults == ROI_DEFAULTS
    assert resolve_roi_settings("rank") == ROI_DEFAULTS
    out = resolve_roi_settings("dice", roi_weight=3, roi_warmup=None, roi_dilation=0)
    assert out == dict(ROI_DEFAULTS, roi_weight=3.0, roi_dilation=0)
    assert isinstance(out["roi_weight"], float)
    for given, match in [({"roi_weight": -1}, "roi_weight"), ({"roi_balance": "x"},
                         "roi_balance"), ({"roi_dilation": 1.5}, "roi_dilation"),
                         ({"roi_warmup": 1.0}, "roi_warmup"),
                         ({"roi_conflict": "x"}, "roi_conflict"), ({"roi_weights": 1},
                         "Unknown ROI setting")]:
        with pytest.raises(ValueError, match=match):
            resolve_roi_settings("rank", **given)
    with pytest.raises(ValueError, match="Unknown roi_loss 'gradmask'"):
        resolve_roi_settings("gradmask")


def test_old_records_are_filled_with_what_they_trained_with_and_never_overwritten():
    record = {"roi_loss": "dice", "roi_balance": "ce", "roi_weight": 0.1}
    filled = with_legacy_settings(record)
    assert filled == {"roi_loss": "dice", "roi_balance": "ce", "roi_weight": 0.1,
                      "roi_dilation": 0, "roi_warmup": 0, "roi_conflict": "sum"}
    assert record == {"roi_loss": "dice", "roi_balance": "ce", "roi_weight": 0.1}  # a copy
    assert with_legacy_settings(record, ("roi_conflict",)) == dict(record, roi_conflict="sum")


def test_the_description_names_the_epoch_the_term_starts_with_or_without_an_epoch_count():
    from xal_sklearn.roi_loss import ROI_DEFAULTS, describe_roi_training, warmup_epochs
    base = dict(ROI_DEFAULTS, roi_loss="rank")
    for warmup, epochs in [(0.4, 20), (0.45, 7), (np.float32(0.5), 9), (3, 10)]:
        words = describe_roi_training(dict(base, roi_warmup=warmup, max_epochs=epochs))
        assert f"from epoch {warmup_epochs(warmup, epochs) + 1} of {epochs}" in words
    assert describe_roi_training(dict(base, roi_warmup=3)).endswith("from epoch 4")
    assert describe_roi_training(dict(base, roi_warmup=0.4)).endswith(
        "after the first 40% of the epochs")
    assert "from epoch" not in describe_roi_training(dict(base, roi_warmup=0, max_epochs=5))


def test_the_description_says_how_the_gradients_meet():
    from xal_sklearn.roi_loss import ROI_CONFLICTS, ROI_DEFAULTS, describe_roi_training
    base = dict(ROI_DEFAULTS, roi_loss="rank")
    words = {c: describe_roi_training(dict(base, roi_conflict=c)) for c in ROI_CONFLICTS}
    assert "projected" not in words["sum"]
    assert "projected" in words["project"] and "apart" not in words["project"]
    assert "projected" in words["separate"] and "stepped apart" in words["separate"]


def test_the_attention_term_never_reaches_the_context_branch(phantoms):
    from xal_sklearn import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN(n_classes=3, context_channels=4)
    layer = net.get_submodule(net.default_gradcam_layer)
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.from_numpy(phantoms.X[:8])
    logits = net(x)
    handle.remove()
    term = roi_loss_term("rank", x=x, logits=logits, activations=seen[0],
                         target=torch.from_numpy(phantoms.y[:8]).long(),
                         masks=torch.from_numpy(phantoms.roi_masks[:8]),
                         has_roi=torch.ones(8, dtype=torch.bool), dilation=2)
    context = list(net.context.parameters())
    grads = torch.autograd.grad(term, [layer.weight, *context], allow_unused=True)
    assert grads[0].abs().sum() > 0  # the taught block is taught ...
    assert all(g is None or not g.any() for g in grads[1:])  # ... the context is not
    # and a guided fit of the classifier trains with it end to end
    guided = CNNClassifier(n_classes=3, max_epochs=2, random_state=0, roi_loss="rank",
                           roi_warmup=0, module__context_channels=4)
    guided.fit(phantoms.X[:64], phantoms.y[:64], roi_masks=phantoms.roi_masks[:64])
    assert np.isfinite(guided.history[:, "train_loss"]).all()
