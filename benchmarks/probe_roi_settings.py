"""ROI-loss settings on the real brain MRI, judged on validation groups (issue 16, part 1).

For each setting and seed: the seed's group split (as ``xal run``), then validation
groups split off the training part (seed + 100); 570 random images of the rest train a
``CNNClassifier`` (20 epochs); accuracy and Grad-CAM ``roi_auc`` are measured on the
validation groups. The test split is never read. ``Normalised`` (not in the package; an
experiment) rescales the attention term at every step to ``roi_weight`` x the
cross-entropy's size, the scaling of the explanatory-interactive-learning typology code.

    python benchmarks/probe_roi_settings.py --mri ../shared/data/brain-tumor-figshare \
        [--configs ce,dice0.1,...] [--seeds 3] [--shortcut KIND [--disagree SHARE]]

prints one JSON line per setting (per-seed values and means). Results: docs/results.md.
"""
import argparse
import json
import time

import numpy as np
import torch

from xal_sklearn import CNNClassifier, roi_loss, score_pool
from xal_sklearn.alignment import alignment_t
from xal_sklearn.datasets import (add_shortcut, group_train_test_split,
                                  load_brain_tumor_figshare)
from xal_sklearn.roi_loss import (LEGACY_ROI_SETTINGS, balanced_term, masks_to_grid,
                                  roi_loss_term, split_gradients)


class Normalised(CNNClassifier):
    """Attention term rescaled each step to roi_weight x the cross-entropy's size."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        ce = super(CNNClassifier, self).get_loss(y_pred, y_true, X=X, training=training)
        if not (training and isinstance(X, dict) and "activations" in X):
            return ce
        term = roi_loss_term(self.roi_loss, x=X["x"], logits=y_pred,
                             activations=X["activations"], target=y_true.long(),
                             masks=X["roi"], has_roi=X["has_roi"], dilation=self.roi_dilation)
        scale = ce.detach() / term.detach().clamp_min(1e-6)
        return ce + float(self.roi_weight) * scale * term


class Gated(CNNClassifier):
    """The package's attention term on a subset of each batch's ROI images, chosen from
    the batch's own predictions (the labels are the training labels): ``probe_gate=
    "correct"`` only images the network already classifies right ("right for the right
    reasons" asks for right reasons on right answers), ``"wrong"`` only the others."""

    def __init__(self, *args, probe_gate="correct", **kw):
        super().__init__(*args, **kw)
        self.probe_gate = probe_gate

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if training and isinstance(X, dict) and "activations" in X:
            right = y_pred.argmax(1) == y_true.to(y_pred.device).long()
            keep = right if self.probe_gate == "correct" else ~right
            X = dict(X, has_roi=X["has_roi"].to(keep.device) & keep)
        return super().get_loss(y_pred, y_true, X=X, training=training)


class Capped(CNNClassifier):
    """The package's projected term, then each parameter tensor's share of the term's
    gradient capped at ``probe_cap`` x that tensor's cross-entropy gradient norm. A
    diagnosis (docs/results.md) found the term's gradient 1.1-4.9x the cross-entropy's
    per tensor; under Adam that inflates the second moment and slows the
    cross-entropy's own steps, one explanation of the accuracy cost."""

    def __init__(self, *args, probe_cap=1.0, **kw):
        super().__init__(*args, **kw)
        self.probe_cap = probe_cap

    def _backward_projected(self, ce, loss):
        params = [p for p in self.module_.parameters() if p.requires_grad]
        for p, a, t in zip(params, *split_gradients(params, ce, loss)):
            limit = self.probe_cap * a.norm()
            t = t * torch.clamp(limit / t.norm().clamp_min(1e-12), max=1.0)
            p.grad = a + t if p.grad is None else p.grad + a + t


class CEPreconditioned(CNNClassifier):
    """Adam sees the cross-entropy's gradient alone; the (projected) attention gradient
    is applied after Adam's step, divided by the square root of Adam's second moment
    (which then holds the cross-entropy's alone) and scaled by ``probe_scale``: the
    term moves the weights without slowing the cross-entropy's steps."""

    def __init__(self, *args, probe_scale=1.0, **kw):
        super().__init__(*args, **kw)
        self.probe_scale = probe_scale

    def _backward_projected(self, ce, loss):
        params = [p for p in self.module_.parameters() if p.requires_grad]
        g_ce, g_term = split_gradients(params, ce, loss)
        self._probe_term_grads = list(zip(params, g_term))
        for p, a in zip(params, g_ce):
            p.grad = a if p.grad is None else p.grad + a

    def train_step(self, batch, **fit_params):
        self._probe_term_grads = []
        step = super().train_step(batch, **fit_params)
        opt = self.optimizer_
        group = opt.param_groups[0]
        beta2, eps, lr = group["betas"][1], group["eps"], group["lr"]
        with torch.no_grad():
            for p, t in self._probe_term_grads:
                state = opt.state[p]
                v = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
                p -= self.probe_scale * lr * t / (v.sqrt() + eps)
        self._probe_term_grads = []
        return step


class SeparateMomentum(CNNClassifier):
    """``roi_conflict="separate"`` with the term's gradient averaged over steps first:
    an exponential average (``probe_beta``, bias-corrected over the steps the term has
    been on) goes to ``step_term_apart`` instead of each batch's gradient, so the term
    steps as Adam would step it (first moment over the cross-entropy's second).
    ``"separate"`` moves a weight by up to 20-25 learning rates in one step on one
    batch's gradient; averaging keeps the directions the batches agree on."""

    def __init__(self, *args, probe_beta=0.9, **kw):
        super().__init__(*args, **kw)
        self.probe_beta = probe_beta

    def _backward_projected(self, ce, loss):
        # the package keeps the term's gradients in _term_grads for its train_step to
        # step apart; here they are replaced by their running average first
        super()._backward_projected(ce, loss)
        state = getattr(self, "_probe_state", None)
        if state is None or state["optimizer"] != id(self.optimizer_):  # a new fit
            state = self._probe_state = {"optimizer": id(self.optimizer_), "m": {}, "t": 0}
        b = self.probe_beta
        state["t"] += 1
        averaged = []
        for p, g in self._term_grads:
            m = state["m"].get(id(p))
            m = g * (1 - b) if m is None else m.mul_(b).add_(g, alpha=1 - b)
            state["m"][id(p)] = m
            averaged.append((p, m / (1 - b ** state["t"])))
        self._term_grads = averaged


class Bounded(CNNClassifier):
    """``roi_conflict="separate"`` with a tighter bound on the term's step: no weight
    moves by more than ``probe_bound`` learning rates in one step (the package's
    ``TERM_STEP_BOUND`` is 100, a guard; the term moved weights by up to 20-25, where
    Adam's own steps are about one)."""

    def __init__(self, *args, probe_bound=3.0, **kw):
        super().__init__(*args, **kw)
        self.probe_bound = probe_bound

    def train_step(self, batch, **fit_params):
        saved = roi_loss.TERM_STEP_BOUND
        roi_loss.TERM_STEP_BOUND = self.probe_bound  # read by step_term_apart at each call
        try:
            return super().train_step(batch, **fit_params)
        finally:
            roi_loss.TERM_STEP_BOUND = saved


class MaskedWarmup(CNNClassifier):
    """During the warm-up epochs (before the attention term starts), every image with an
    ROI is shown blacked out outside its ROI grown by ``probe_px`` pixels; afterwards
    whole images, with the term as configured. Cross-entropy on such images reaches
    0.824 on validation against 0.779 on whole ones (``probe_roi_only.py``): the network
    first learns what a tumour looks like, then meets the context."""

    def __init__(self, *args, probe_px=2, **kw):
        super().__init__(*args, **kw)
        self.probe_px = probe_px

    def train_step_single(self, batch, **fit_params):
        Xi, yi = batch
        if isinstance(Xi, dict) and "roi" in Xi and not self._roi_active():
            x, has = Xi["x"], Xi["has_roi"].to(Xi["x"].device)
            keep = (masks_to_grid(Xi["roi"].to(x.device), tuple(x.shape[2:]), self.probe_px)
                    > 0)[:, None].to(x.dtype)
            keep = torch.where(has.view(-1, *[1] * (x.dim() - 1)), keep, torch.ones_like(keep))
            batch = (dict(Xi, x=x * keep), yi)
        return super().train_step_single(batch, **fit_params)


class ContextNear(CNNClassifier):
    """The package's network and attention term, plus a term on the context branch's own
    Grad-CAM (``module_.context[0]``, as the taught block's is read at its convolution):
    ``probe_ctx_loss`` (default ``"outside"``: the map's mass outside the ROI grown by
    ``probe_ctx_dilation`` cells) weighed by ``probe_ctx_weight`` as the package weighs
    its own term (``roi_balance``). The branch may read the tumour and its surroundings,
    the ring the figshare authors found informative, but not what lies far from it: a
    frame on the image's edge is not context. It takes the package's path for the term
    (projected, and ``"separate"`` included), so both terms step apart together."""

    def __init__(self, *args, probe_ctx_dilation=4, probe_ctx_weight=1.0,
                 probe_ctx_loss="outside", **kw):
        super().__init__(*args, **kw)
        self.probe_ctx_dilation = probe_ctx_dilation
        self.probe_ctx_weight = probe_ctx_weight
        self.probe_ctx_loss = probe_ctx_loss

    def train_step_single(self, batch, **fit_params):
        seen = self._ctx_seen = {}

        def keep(module, inputs, output):
            seen["A"] = output
            return output.clone()  # as the package keeps the taught block's

        handle = self.module_.context[0].register_forward_hook(keep)
        try:
            return super().train_step_single(batch, **fit_params)
        finally:
            handle.remove()
            self._ctx_seen = None

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        seen = getattr(self, "_ctx_seen", None)
        if not (training and isinstance(X, dict) and "activations" in X and seen):
            return loss
        ce = super(CNNClassifier, self).get_loss(y_pred, y_true, X=X, training=training)
        term = roi_loss_term(self.probe_ctx_loss, x=X["x"], logits=y_pred,
                             activations=seen["A"], target=y_true.long(),
                             masks=X["roi"], has_roi=X["has_roi"],
                             dilation=self.probe_ctx_dilation)
        return loss + balanced_term(term, ce, float(self.probe_ctx_weight), self.roi_balance)


class TwoBranchCNN(torch.nn.Module):
    """``SmallCNN`` (16-32-64) whose last block is two blocks of 32 channels side by side:
    ``att``, whose Grad-CAM the attention term teaches and scoring reads
    (``default_gradcam_layer``), and ``ctx``, left to the cross-entropy; the head reads
    both pooled. Same parameter count as ``SmallCNN`` at the default widths
    (``ctx_width`` narrows the free branch). The context outside the tumour
    carries the class as well as the whole image (``probe_roi_only.py --outside``), so a
    map forced onto the tumour takes evidence away; here the context keeps a way in.
    ``width=48, ctx_width=16`` (the ``two16-`` configs) is the package's default
    ``SmallCNN(context_channels=16)``: the same weights from the same seed, the same
    logits (checked bit for bit)."""

    default_gradcam_layer = "att.0"

    def __init__(self, in_channels=1, n_classes=2, width=32, ctx_width=None):
        super().__init__()
        nn = torch.nn
        ctx_width = width if ctx_width is None else ctx_width

        def block(cin, cout, pool):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    *([nn.MaxPool2d(2)] if pool else []), nn.ReLU()]

        self.features = nn.Sequential(*block(in_channels, 16, True), *block(16, 32, True))
        self.att = nn.Sequential(*block(32, width, False))
        self.ctx = nn.Sequential(*block(32, ctx_width, False))
        self.head = nn.Linear(width + ctx_width, n_classes)

    def forward(self, x):
        h = self.features(x)
        return self.head(torch.cat([self.att(h).mean((2, 3)), self.ctx(h).mean((2, 3))], 1))


SECOND_ORDER = [False]


def _cam_pre_relu(activations, logits, target):
    """Grad-CAM of the true class before its ReLU (first order unless SECOND_ORDER)."""
    score = logits.gather(1, target.view(-1, 1)).sum()
    grads, = torch.autograd.grad(score, activations, retain_graph=True,
                                 create_graph=SECOND_ORDER[0])
    weights = grads.mean(dim=(2, 3), keepdim=True)
    if not SECOND_ORDER[0]:
        weights = weights.detach()
    return (weights * activations).sum(1)


def rank_term(activations, logits, target, grid):
    """Soft pairwise AUC: every ROI cell should outrank every non-ROI cell."""
    cam = _cam_pre_relu(activations, logits, target)
    c, g = cam.reshape(len(cam), -1), grid.reshape(len(cam), -1).to(cam.dtype)
    s = (c - c.mean(1, keepdim=True)) / c.std(1, keepdim=True).clamp_min(1e-6)
    pair = g[:, :, None] * (1 - g)[:, None, :]
    loss = (pair * torch.nn.functional.softplus(s[:, None, :] - s[:, :, None])).sum((1, 2))
    return loss / pair.sum((1, 2)).clamp_min(1e-12)


def rank_all_term(activations, logits, target, grid):
    """``rank_term`` averaged over every class's Grad-CAM (the target is ignored), so the
    map of whatever class is predicted, right or wrong, is taught to favour the ROI."""
    return torch.stack([rank_term(activations, logits, torch.full_like(target, c), grid)
                        for c in range(logits.shape[1])]).mean(0)


def _standardised(activations, logits, target, grid):
    cam = _cam_pre_relu(activations, logits, target)
    c, g = cam.reshape(len(cam), -1), grid.reshape(len(cam), -1).to(cam.dtype)
    return (c - c.mean(1, keepdim=True)) / c.std(1, keepdim=True).clamp_min(1e-6), g


def rank_hinge_term(activations, logits, target, grid):
    """Pairwise hinge: ROI cells should outrank non-ROI cells by one standard deviation."""
    s, g = _standardised(activations, logits, target, grid)
    pair = g[:, :, None] * (1 - g)[:, None, :]
    loss = (pair * torch.relu(1 - (s[:, :, None] - s[:, None, :]))).sum((1, 2))
    return loss / pair.sum((1, 2)).clamp_min(1e-12)


def mean_diff_term(activations, logits, target, grid):
    """The ROI's mean standardised evidence should exceed the rest's."""
    s, g = _standardised(activations, logits, target, grid)
    inside = (s * g).sum(1) / g.sum(1).clamp_min(1e-6)
    outside = (s * (1 - g)).sum(1) / (1 - g).sum(1).clamp_min(1e-6)
    return torch.nn.functional.softplus(outside - inside)


def roi_ce_term(activations, logits, target, grid):
    """Cross-entropy of the logits the ROI's mean activation alone would give."""
    n_classes = logits.shape[1]
    w = torch.stack([torch.autograd.grad(logits[:, c].sum(), activations,
                                         retain_graph=True)[0].mean((2, 3))
                     for c in range(n_classes)], 1).detach()           # B, C, K
    g = grid.to(activations.dtype)
    pooled = (activations * g[:, None]).sum((2, 3)) / g.sum((1, 2)).clamp_min(1e-6)[:, None]
    full = activations.mean((2, 3))
    hw = activations.shape[2] * activations.shape[3]
    logits_in = logits + hw * torch.einsum("bck,bk->bc", w, pooled - full)
    return torch.nn.functional.cross_entropy(logits_in, target, reduction="none")


class Custom(CNNClassifier):
    """Probe-only attention terms, named by ``probe_term`` ("rank", "rank+roice",
    "cxswap" ...), each rescaled to ``roi_weight`` x the cross-entropy when
    ``probe_norm`` (counterexample terms "cx*" never are); ``probe_project`` removes
    the part of the attention gradient that opposes the cross-entropy's (PCGrad-like);
    ``probe_px`` grows the ROI of counterexamples by that many pixels."""

    # a name ending in "g" keeps the Grad-CAM weights' own gradient (SECOND_ORDER)
    TERMS = {"rank": rank_term, "rankg": rank_term, "rankh": rank_hinge_term,
             "mdiff": mean_diff_term, "mdiffg": mean_diff_term, "roice": roi_ce_term,
             "rankall": rank_all_term}

    def __init__(self, *args, probe_term="rank", probe_norm=True, probe_project=False,
                 probe_px=2, **kw):
        super().__init__(*args, **kw)
        self.probe_px = probe_px
        self.probe_term = probe_term
        self.probe_norm = probe_norm
        self.probe_project = probe_project

    def _counterexample_ce(self, x, masks, target, has, swap):
        from xal_sklearn.roi_loss import masks_to_grid
        m = (masks_to_grid(masks, tuple(x.shape[2:]), self.probe_px) > 0).to(x.dtype)[:, None]
        x, m, target = x[has], m[has], target[has]
        if swap:  # another image's context, its own lesion blacked out
            perm = torch.roll(torch.arange(len(x)), 1)
            background = x[perm] * (1 - m[perm])
        else:
            background = torch.zeros_like(x)
        logits = self.infer(m * x + (1 - m) * background)
        return torch.nn.functional.cross_entropy(logits, target)

    #: counterexample terms that *replace* images rather than add to them: the share of
    #: a batch's ROI images shown only as their counterexample
    REPLACING = {"cxrep": 1.0, "cxhalf": 0.5}

    def _replaced_ce(self, x, masks, logits, target, has, share):
        """Batch cross-entropy with a ``share`` of the ROI images (drawn at random each
        step) replaced by their counterexamples (``roi_loss.counterexamples``)."""
        from xal_sklearn.roi_loss import counterexamples
        per = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        swap = has & (torch.rand(len(target)) < share)
        if not bool(swap.any()):
            return per.mean()
        cx = counterexamples(x, masks, swap, self.probe_px)
        per_cx = torch.nn.functional.cross_entropy(self.infer(cx), target[swap],
                                                   reduction="none")
        return (per[~swap].sum() + per_cx.sum()) / len(target)

    def _projected(self, ce, total):
        """Gradients set by hand: the attention gradient without its part against the CE's."""
        params = [p for p in self.module_.parameters() if p.requires_grad]
        g_ce = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
        g_t = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
        zero = [torch.zeros_like(p) for p in params]
        g_ce = [z if g is None else g for g, z in zip(g_ce, zero)]
        g_t = [z if g is None else g for g, z in zip(g_t, zero)]
        dot = sum((a * b).sum() for a, b in zip(g_ce, g_t))
        if dot < 0:
            norm2 = sum((a * a).sum() for a in g_ce).clamp_min(1e-12)
            g_t = [b - dot / norm2 * a for a, b in zip(g_ce, g_t)]
        for p, a, b in zip(params, g_ce, g_t):
            p.grad = a + b if p.grad is None else p.grad + a + b
        return (ce + total).detach().requires_grad_()  # its backward adds nothing

    def get_loss(self, y_pred, y_true, X=None, training=False):
        ce = super(CNNClassifier, self).get_loss(y_pred, y_true, X=X, training=training)
        if not (training and isinstance(X, dict) and "activations" in X):
            return ce
        SECOND_ORDER[0] = self.probe_term.endswith("g") or "g+" in self.probe_term
        has = X["has_roi"]
        if not bool(has.any()):
            return ce
        a, t = X["activations"], y_true.long()
        from xal_sklearn.roi_loss import masks_to_grid
        grid = masks_to_grid(X["roi"], tuple(a.shape[2:]), self.roi_dilation)
        total = 0
        for name in self.probe_term.split("+"):
            if name in self.REPLACING:  # the cross-entropy itself changes
                ce = self._replaced_ce(X["x"], X["roi"], y_pred, t, has,
                                       self.REPLACING[name])
                continue
            if name.startswith("cx"):  # counterexamples: the ROI kept, the context replaced
                total = total + float(self.roi_weight) * self._counterexample_ce(
                    X["x"], X["roi"], t, has, swap=name == "cxswap")
                continue
            term = self.TERMS[name](a, y_pred, t, grid)[has].mean()
            scale = (ce.detach() / term.detach().clamp_min(1e-6)) if self.probe_norm else 1.0
            total = total + float(self.roi_weight) * scale * term
        if self.probe_project:
            return self._projected(ce, total)
        return ce + total


#: The ROI parameters as they were before the package's defaults changed, so that every
#: setting below keeps meaning what it meant when it was measured.
OLD_DEFAULTS = dict(LEGACY_ROI_SETTINGS, roi_weight=0.1)
#: The package's second defaults (December 2026), which the ``pkg-`` settings below were
#: measured with or around; the third defaults are ``pkg-sep-w1.5``.
SECOND_DEFAULTS = {"roi_weight": 3.0, "roi_balance": "ce", "roi_dilation": 2,
                   "roi_warmup": 0.4, "roi_conflict": "project"}



def separate(w, **extra):
    """``rank`` with ``roi_conflict="separate"`` at weight ``w``, the rest the second
    defaults (``separate(1.5)`` is the third defaults)."""
    return dict(roi_loss="rank", **dict(SECOND_DEFAULTS, roi_conflict="separate",
                                        roi_weight=w, **extra))


N, O = "dice", "outside"
CONFIGS = {  # name -> CNNClassifier parameters (cls: the estimator class)
    "ce": dict(),
    "dice0.1": dict(roi_loss=N, roi_weight=0.1),
    "norm-dice1": dict(cls=Normalised, roi_loss=N, roi_weight=1.0),
    "norm-outside1": dict(cls=Normalised, roi_loss=O, roi_weight=1.0),
    "norm-dice1-L4": dict(cls=Normalised, roi_loss=N, roi_weight=1.0,
                          gradcam_layer="features.4"),
    "norm-outside1-dil2": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=2),
    "norm-outside0.3-dil2": dict(cls=Normalised, roi_loss=O, roi_weight=0.3, roi_dilation=2),
    "norm-outside3-dil2": dict(cls=Normalised, roi_loss=O, roi_weight=3.0, roi_dilation=2),
    "norm-dice1-dil2": dict(cls=Normalised, roi_loss=N, roi_weight=1.0, roi_dilation=2),
    "norm-outside1-dil2-warm5": dict(cls=Normalised, roi_loss=O, roi_weight=1.0,
                                     roi_dilation=2, roi_warmup=5),
    "outside3-dil2": dict(roi_loss=O, roi_weight=3.0, roi_dilation=2),
    "norm-outside1-dil4-L4": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=4,
                                  gradcam_layer="features.4"),
    "norm-outside1-dil1": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=1),
    "norm-outside1-dil3": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=3),
    "rank1": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rank"),
    "rank1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rank",
                       roi_dilation=2),
    "rank0.3-dil2": dict(cls=Custom, roi_loss=N, roi_weight=0.3, probe_term="rank",
                         roi_dilation=2),
    "roice1": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="roice",
                   probe_norm=False),
    "roice1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="roice",
                        probe_norm=False, roi_dilation=2),
    "rank1+roice1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0,
                              probe_term="rank+roice", roi_dilation=2),
    "rankg1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rankg",
                        roi_dilation=2),
    "rankg0.3-dil2": dict(cls=Custom, roi_loss=N, roi_weight=0.3, probe_term="rankg",
                          roi_dilation=2),
    "rankg1-dil2-warm10": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rankg",
                               roi_dilation=2, roi_warmup=10),
    "mdiffg1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="mdiffg",
                         roi_dilation=2),
    "rank1-dil2-proj": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rank",
                            roi_dilation=2, probe_project=True),
    "rank1-dil2-warm10-proj": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rank",
                                   roi_dilation=2, roi_warmup=10, probe_project=True),
    "rank3-dil2-proj": dict(cls=Custom, roi_loss=N, roi_weight=3.0, probe_term="rank",
                            roi_dilation=2, probe_project=True),
    "cxzero1": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="cxzero"),
    "cxswap1": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="cxswap"),
    "cxswap1-px0": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="cxswap",
                        probe_px=0),
    "cxswap1+rank0.3-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0,
                                 probe_term="cxswap+rank", roi_dilation=2),
    # the package's losses and balancing (everything above pins the old defaults)
    "pkg-rank1-dil2-warm0.5": dict(roi_loss="rank", roi_weight=1.0, roi_dilation=2,
                                   roi_warmup=0.5, roi_balance="ce"),
    "pkg-cx1-ce": dict(roi_loss="counterexample", roi_weight=1.0, roi_dilation=2,
                       roi_balance="ce"),
    "pkg-cx1-fixed": dict(roi_loss="counterexample", roi_weight=1.0, roi_dilation=2,
                          roi_balance="fixed"),
    "pkg-cx0.3-fixed": dict(roi_loss="counterexample", roi_weight=0.3, roi_dilation=2,
                            roi_balance="fixed"),
    "rank1-dil4": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rank",
                       roi_dilation=4),
    "rank1-dil2-warm10": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rank",
                              roi_dilation=2, roi_warmup=10),
    "rankh1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rankh",
                        roi_dilation=2),
    "mdiff1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="mdiff",
                        roi_dilation=2),
    # counterexamples replacing the images they are made from (not added beside them)
    "cxrep": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="cxrep"),
    "cxhalf": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="cxhalf"),
    "cxrep-px4": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="cxrep", probe_px=4),
    "cxhalf+rank1-dil2-warm10": dict(cls=Custom, roi_loss=N, roi_weight=1.0,
                                     probe_term="cxhalf+rank", roi_dilation=2,
                                     roi_warmup=10),
    "pkg-cx0.3-ce": dict(roi_loss="counterexample", roi_weight=0.3, roi_dilation=2,
                         roi_balance="ce"),
    # input gradients outside the ROI (right for the right reasons), CE-balanced
    "pkg-rrr1-ce": dict(roi_loss="rrr", roi_weight=1.0, roi_balance="ce", roi_warmup=0),
    "pkg-rrr1-ce-warm0.5": dict(roi_loss="rrr", roi_weight=1.0, roi_balance="ce",
                                roi_warmup=0.5),
    "rank0.1-dil2": dict(cls=Custom, roi_loss=N, roi_weight=0.1, probe_term="rank",
                         roi_dilation=2),
    # stronger or later terms around the default (ce balance, dil 2, from epoch 11)
    "rank2-dil2-warm10": dict(cls=Custom, roi_loss=N, roi_weight=2.0, probe_term="rank",
                              roi_dilation=2, roi_warmup=10),
    "rank3-dil2-warm14": dict(cls=Custom, roi_loss=N, roi_weight=3.0, probe_term="rank",
                              roi_dilation=2, roi_warmup=14),
    "rank1-dil3-warm10": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rank",
                              roi_dilation=3, roi_warmup=10),
    "rank2-dil2-warm10-proj": dict(cls=Custom, roi_loss=N, roi_weight=2.0, probe_term="rank",
                                   roi_dilation=2, roi_warmup=10, probe_project=True),
    "rank3-dil2-warm10-proj": dict(cls=Custom, roi_loss=N, roi_weight=3.0, probe_term="rank",
                                   roi_dilation=2, roi_warmup=10, probe_project=True),
    "rank5-dil2-warm10-proj": dict(cls=Custom, roi_loss=N, roi_weight=5.0, probe_term="rank",
                                   roi_dilation=2, roi_warmup=10, probe_project=True),
    "rank3-dil2-warm8-proj": dict(cls=Custom, roi_loss=N, roi_weight=3.0, probe_term="rank",
                                  roi_dilation=2, roi_warmup=8, probe_project=True),
    "rank3-dil2-warm6-proj": dict(cls=Custom, roi_loss=N, roi_weight=3.0, probe_term="rank",
                                  roi_dilation=2, roi_warmup=6, probe_project=True),
    "rank3-dil2-warm8": dict(cls=Custom, roi_loss=N, roi_weight=3.0, probe_term="rank",
                             roi_dilation=2, roi_warmup=8),
    # every class's map taught, not the true class's alone
    "rankall1-dil2-warm10": dict(cls=Custom, roi_loss=N, roi_weight=1.0, probe_term="rankall",
                                 roi_dilation=2, roi_warmup=10),
    # the package's second defaults, and the term on a subset of each batch (Gated)
    "pkg-default": dict(roi_loss="rank", **SECOND_DEFAULTS),
    "pkg-default-correct": dict(cls=Gated, roi_loss="rank", probe_gate="correct",
                                **SECOND_DEFAULTS),
    "pkg-default-wrong": dict(cls=Gated, roi_loss="rank", probe_gate="wrong",
                              **SECOND_DEFAULTS),
    "pkg-w5-correct": dict(cls=Gated, roi_loss="rank", probe_gate="correct",
                           **dict(SECOND_DEFAULTS, roi_weight=5.0)),
    "pkg-warm0.3-correct": dict(cls=Gated, roi_loss="rank", probe_gate="correct",
                                **dict(SECOND_DEFAULTS, roi_warmup=0.3)),
    # the term's gradient kept from slowing Adam's cross-entropy steps (Capped,
    # CEPreconditioned)
    "pkg-cap1": dict(cls=Capped, roi_loss="rank", probe_cap=1.0, **SECOND_DEFAULTS),
    "pkg-cap0.5": dict(cls=Capped, roi_loss="rank", probe_cap=0.5, **SECOND_DEFAULTS),
    "pkg-precond": dict(cls=CEPreconditioned, roi_loss="rank", probe_scale=1.0,
                        **SECOND_DEFAULTS),
    "pkg-precond0.3": dict(cls=CEPreconditioned, roi_loss="rank", probe_scale=0.3,
                           **SECOND_DEFAULTS),
    "pkg-precond0.5": dict(cls=CEPreconditioned, roi_loss="rank", probe_scale=0.5,
                           **SECOND_DEFAULTS),
    "pkg-precond-warm0.5": dict(cls=CEPreconditioned, roi_loss="rank", probe_scale=1.0,
                                **dict(SECOND_DEFAULTS, roi_warmup=0.5)),
    # the package's roi_conflict="separate" (equals CEPreconditioned at probe_scale
    # roi_weight / 3), around weight 1.5 (the third defaults: pkg-sep-w1.5)
    **{f"pkg-sep-w{w}{tag}": separate(w, **extra)
       for w in (1.0, 1.5, 2.0) for tag, extra in (("", {}), ("-warm0.3", {"roi_warmup": 0.3}),
                                                     ("-dil3", {"roi_dilation": 3}))},
    # the separate term averaged over steps (SeparateMomentum)
    **{f"pkg-sepmom-w{w}": dict(cls=SeparateMomentum, **separate(w)) for w in (1.5, 3.0)},
    # the separate term's step bounded tighter (Bounded)
    **{f"pkg-sepbound{b:g}-w{w}": dict(cls=Bounded, probe_bound=b, **separate(w))
       for b in (1.0, 3.0) for w in (1.5, 3.0)},
    # the warm-up epochs on images blacked out outside the ROI (MaskedWarmup)
    **{f"pkg-maskwarm-w{w}": dict(cls=MaskedWarmup, **separate(w)) for w in (0.0, 1.5)},
    # a context branch beside the attention-taught one (TwoBranchCNN)
    "two-ce": dict(module=TwoBranchCNN),
    **{f"two-sep-w{w}": dict(module=TwoBranchCNN, **separate(w)) for w in (1.0, 1.5, 3.0)},
    # a narrower context branch: 48 taught channels, 8 or 16 free
    **{f"two{c}-ce": dict(module=TwoBranchCNN, module__width=48, module__ctx_width=c)
       for c in (8, 16)},
    **{f"two{c}-sep-w1.0": dict(module=TwoBranchCNN, module__width=48, module__ctx_width=c,
                                **separate(1.0)) for c in (8, 16)},
    **{f"two16-sep-w{w}": dict(module=TwoBranchCNN, module__width=48, module__ctx_width=16,
                               **separate(w)) for w in (1.5, 2.0)},
    # the package's network (16-channel context branch) at the fourth defaults, and with
    # its context branch kept near the ROI (ContextNear): ctxnear{cells}-w{weight}
    "ctx16-ce": dict(module__context_channels=16),
    "ctx16-sep-w1.0": dict(module__context_channels=16, **separate(1.0)),
    **{f"ctxnear{d}-w{cw}": dict(cls=ContextNear, module__context_channels=16,
                                 probe_ctx_dilation=d, probe_ctx_weight=cw, **separate(1.0))
       for d in (2, 3, 5) for cw in (0.5, 1.0, 2.0)},
}


def labelled_set(data, fit_part, seed, disagree=None, n=570):
    """``n`` random images of ``fit_part``; with ``disagree``, that share of them drawn from
    the images whose injected feature disagrees with the label (as the uncertainty
    strategies' sets on shortcut pools: docs/results.md)."""
    rng = np.random.RandomState(seed)
    if disagree is None:
        return rng.choice(fit_part, n, replace=False)
    lies = data.shortcut.feature_class[fit_part] != data.y[fit_part]
    k = int(round(disagree * n))
    if not (k <= lies.sum() and n - k <= (~lies).sum()):
        raise ValueError(f"--disagree {disagree}: {k} of {n} images should disagree, the fit "
                         f"part has {lies.sum()} that do and {(~lies).sum()} that do not.")
    return np.concatenate([rng.choice(fit_part[lies], k, replace=False),
                           rng.choice(fit_part[~lies], n - k, replace=False)])


def evaluate(data, name, seeds, shortcut=None, disagree=None):
    cfg = dict(OLD_DEFAULTS, **CONFIGS[name])
    if "module" not in cfg:  # SmallCNN as measured: without the branch unless a config names it
        cfg.setdefault("module__context_channels", 0)
    cls = cfg.pop("cls", CNNClassifier)
    accs, aucs, start = [], [], time.time()
    clean = data
    for seed in seeds:
        train, _ = group_train_test_split(clean.groups, 0.2, random_state=seed)
        fit_part, val_part = (train[i] for i in group_train_test_split(
            clean.groups[train], 0.2, random_state=seed + 100))
        if shortcut:  # in the fit part at 0.9, independent of the label on validation
            data = add_shortcut(clean, shortcut, 0.9, test_idx=val_part, random_state=seed)
        idx = labelled_set(data, fit_part, seed, disagree)
        net = cls(n_classes=3, max_epochs=20, random_state=seed, **cfg)
        kw = {"roi_masks": data.roi_masks[idx]} if "roi_loss" in cfg else {}
        net.fit(data.X[idx], data.y[idx], **kw)
        s = score_pool(net, data.X[val_part], data.roi_masks[val_part], return_maps=True,
                       progress=False)
        accs.append(float(np.mean(s.y_pred == data.y[val_part])))
        has = s.roi_available
        aucs.append(float(np.nanmean(alignment_t(
            "roi_auc", torch.from_numpy(s.maps[has]).double(),
            torch.from_numpy(data.roi_masks[val_part][has])).numpy())))
    return {"config": name, "acc": accs, "roi_auc": aucs, "acc_mean": float(np.mean(accs)),
            "roi_auc_mean": float(np.mean(aucs)), "seconds": round(time.time() - start)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mri", required=True, help="the brain-tumour figshare folder")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shortcut", default=None, help="inject this add_shortcut kind (0.9)")
    p.add_argument("--disagree", type=float, default=None,
                   help="with --shortcut: this share of the labelled set has a feature that "
                        "disagrees with its label (default: a random set)")
    args = p.parse_args()
    if args.disagree is not None and args.shortcut is None:
        p.error("--disagree needs --shortcut")
    torch.set_num_threads(args.threads)
    data = load_brain_tumor_figshare(args.mri, image_size=64)
    for name in args.configs.split(","):
        out = evaluate(data, name, range(args.seeds), args.shortcut, args.disagree)
        print(json.dumps(dict(out, shortcut=args.shortcut, disagree=args.disagree)),
              flush=True)


if __name__ == "__main__":
    main()
