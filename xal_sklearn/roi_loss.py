"""Attention losses that teach a network to look inside the expert's region of interest.

Each loss compares, for every training sample that has an ROI, where the network
looks with where the expert says the evidence is, and is added to the
cross-entropy by :class:`~xal_sklearn.CNNClassifier` (``roi_loss=``,
``roi_weight=``). ``ROI_LOSSES`` is the registry of choices:

* ``"dice"``: ``1 - soft Dice`` between the Grad-CAM map of the *true* class at
  the Grad-CAM layer (divided by its maximum) and the mask brought to that
  layer's grid -- the loss of the reference method;
* ``"outside"``: the share of the Grad-CAM's positive mass that falls outside
  the mask (GradMask / RES family);
* ``"rank"``: a soft pairwise ROC AUC of the true class's Grad-CAM (before its
  ReLU, standardised per image): every cell in the mask should outrank every
  cell outside it, ``mean softplus(s_out - s_in)`` over such pairs. It asks for
  an order, not for zero evidence outside the mask, and it is what ``roi_auc``
  measures; maps of more than ``RANK_MAX_CELLS`` cells are area-averaged first;
* ``"counterexample"``: the cross-entropy of counterexamples (the "CE" method
  of the explanatory-interactive-learning typology; Teso and Kersting, 2019):
  each image with an ROI is shown again with its ROI (grown by ``dilation``
  *pixels*) kept and everything else taken from the next image of the batch
  that has one, whose own ROI is blacked out. The label stays. It needs no
  Grad-CAM layer and teaches the network that the context does not decide the
  class, which is what a shortcut outside the lesion exploits;
* ``"rrr"``: "right for the right reasons" (Ross et al., 2017): the squared
  input gradient of the summed log-probabilities, summed over pixels outside
  the mask.

**First order.** The Grad-CAM channel weights (spatial means of the gradient of
the class logit at the layer) are computed with autograd and then treated as
constants: the loss differentiates through the layer's activations only. For a
network that ends in global average pooling and a linear layer (such as
:class:`~xal_sklearn.SmallCNN`) the weights are the head's weights and do not
depend on anything below the layer, so the gradient for every parameter below
the layer is exact; only the second path into the head's own weights is
dropped. This costs one extra backward pass through the head instead of a
double backward through the whole network. ``"rrr"`` needs the gradient of an
input gradient, so it uses double backpropagation (about 2-3x the cost).

**Weighting.** :class:`~xal_sklearn.CNNClassifier` adds the term through
:func:`balanced_term`: by default (``roi_balance="ce"``) rescaled at every step to
``roi_weight`` x the batch's cross-entropy, so that a weight means the same share for
every loss and data set (a fixed weight of 0.1 was effectively zero on brain MRI),
and (``roi_conflict="separate"``) its gradient loses the part that would raise the
cross-entropy (:func:`project_conflict`) and is applied after the optimizer's step on
the cross-entropy alone (:func:`step_term_apart`), so that under Adam it does not slow
the cross-entropy's steps. The defaults ``roi_weight=1.0``, ``roi_dilation=2``,
``roi_warmup=0.4`` with ``"rank"`` were chosen on validation groups of brain MRI
(docs/results.md), with :class:`~xal_sklearn.SmallCNN`'s context branch, which
leaves a quarter of the last block's channels to the cross-entropy so that the
term does not take the tumour's surroundings away from the classifier.

Masks of any resolution with the images' aspect ratio are brought to the
attention grid by area averaging (a cell's value is the share of its pixels in
the ROI) and can be grown by ``dilation`` cells; samples without an ROI add
nothing, so a batch without any ROI gives exactly the cross-entropy.
"""

import math
import numbers

import torch
import torch.nn.functional as F

from ._names import DEFAULT_ROI_LOSS, ROI_BALANCES, ROI_CONFLICTS, ROI_DEFAULTS, ROI_LOSSES
from ._validation import check_finite_nonnegative, epochs_from_setting

__all__ = ["DEFAULT_ROI_LOSS", "GRADCAM_LOSSES", "ROI_BALANCES", "ROI_CONFLICTS", "ROI_LOSSES",
           "RANK_MAX_CELLS", "check_roi_conflict", "project_conflict",
           "balanced_term", "LEGACY_ROI_SETTINGS", "with_legacy_settings",
           "check_roi_balance", "check_roi_loss",
           "check_roi_settings", "counterexamples", "describe_roi_training",
           "ROI_DEFAULTS", "resolve_roi_settings",
           "gradcam_from_activations",
           "masks_to_grid", "roi_loss_term", "warmup_epochs"]

#: Losses read from the Grad-CAM layer's activations in the training forward pass.
GRADCAM_LOSSES = ("dice", "outside", "rank")

#: ``"rank"`` compares all pairs of cells; finer maps are area-averaged to at most
#: this many cells first (memory grows with the square).
RANK_MAX_CELLS = 1024


# ROI_BALANCES, how ``roi_weight`` weighs the attention term against the cross-entropy:
# ``"ce"`` rescales the term at every step so that its value is ``roi_weight`` x the
# batch's cross-entropy (the factor is a constant of the step, not differentiated), so
# one weight means the same share for every loss and data set, and the attention
# gradient shrinks as the fit improves; ``"fixed"`` is ``roi_weight`` x the term.

#: With ``"ce"``, a term smaller than this is rescaled as if it were this large.
BALANCE_FLOOR = 1e-3


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of "
                         f"{', '.join(map(repr, choices))}.")


def check_roi_balance(roi_balance):
    """Refuse an unknown ``roi_balance``."""
    _check_choice(roi_balance, "roi_balance", ROI_BALANCES)


# ROI_CONFLICTS, how the attention term's gradient meets the cross-entropy's at each step:
# ``"project"`` removes from the attention gradient its component along the
# cross-entropy gradient when the two point against each other (negative dot product
# over all trainable parameters; the one-sided projection of PCGrad, Yu et al. 2020), so
# the term can move the map but never, to first order, raise the cross-entropy;
# ``"separate"`` projects as ``"project"`` does and also keeps the term's gradient out of
# the optimizer: the optimizer steps on the cross-entropy's gradient alone and the term is
# applied after that step (:func:`step_term_apart`), so it does not inflate Adam's
# second-moment estimate and slow the cross-entropy's own steps;
# ``"sum"`` adds the two gradients as they are (plain backpropagation of the sum).


def check_roi_conflict(roi_conflict):
    """Refuse an unknown ``roi_conflict``."""
    _check_choice(roi_conflict, "roi_conflict", ROI_CONFLICTS)


def project_conflict(ce_grads, term_grads):
    """The gradient of cross-entropy + attention term under ``roi_conflict="project"``.

    Parameters
    ----------
    ce_grads, term_grads : list of torch.Tensor
        The two losses' gradients, one tensor per parameter, in the same order.

    Returns
    -------
    list of torch.Tensor
        ``g_ce + g_t``, where ``g_t`` loses its component along ``g_ce`` when
        ``<g_ce, g_t> < 0`` (the dot product over all parameters together).
    """
    dot = sum((a * b).sum() for a, b in zip(ce_grads, term_grads))
    if dot < 0:
        norm2 = sum((a * a).sum() for a in ce_grads)
        if norm2 > 0:
            factor = dot / norm2
            term_grads = [b - factor * a for a, b in zip(ce_grads, term_grads)]
    return [a + b for a, b in zip(ce_grads, term_grads)]


def split_gradients(params, cross_entropy, total, retain_graph=False):
    """The cross-entropy's gradient and the attention term's, the latter projected.

    Parameters
    ----------
    params : list of torch.nn.Parameter
        The trainable parameters.
    cross_entropy, total : torch.Tensor
        The cross-entropy alone, and the cross-entropy plus the attention term.
    retain_graph : bool, default=False
        Keep the graph for a later backward pass.

    Returns
    -------
    g_ce, g_term : list of torch.Tensor
        One tensor per parameter (zeros where a loss does not reach it); ``g_term`` is
        the term's gradient after :func:`project_conflict`, so ``g_ce + g_term`` is the
        step direction of ``roi_conflict="project"``.
    """
    g_ce = torch.autograd.grad(cross_entropy, params, retain_graph=True, allow_unused=True)
    g_all = torch.autograd.grad(total, params, retain_graph=retain_graph, allow_unused=True)
    g_ce, g_all = ([torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]
                   for gs in (g_ce, g_all))
    both = project_conflict(g_ce, [b - a for a, b in zip(g_ce, g_all)])
    return g_ce, [b - a for a, b in zip(g_ce, both)]


#: The largest step, in units of the learning rate, that :func:`step_term_apart` lets the
#: attention term take on one weight: a guard for weights the cross-entropy has (almost)
#: never moved, whose second-moment estimate is near 0. In two brain-MRI fits with the
#: defaults the largest step was 25 (docs/results.md): there the guard did not act.
TERM_STEP_BOUND = 100.0


def step_term_apart(optimizer, term_grads):
    """Apply the attention term's gradient after ``optimizer`` has stepped on the
    cross-entropy's (``roi_conflict="separate"``).

    Each parameter moves by ``-lr * g / (sqrt(v_hat) + eps)``, where ``v_hat`` is the
    optimizer's bias-corrected second-moment estimate of the cross-entropy's gradient
    (``exp_avg_sq`` of Adam, AdamW, NAdam and the like) and ``lr``, ``eps`` those of the
    parameter's group: the term is scaled as Adam scales the cross-entropy's steps
    without entering the statistics that scale them. No weight moves by more than
    :data:`TERM_STEP_BOUND` x ``lr``. For an optimizer without such an estimate (SGD)
    it is a plain ``-lr * g`` step.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer that has just stepped.
    term_grads : list of (torch.nn.Parameter, torch.Tensor)
        Each trainable parameter with the term's gradient for it.
    """
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    with torch.no_grad():
        for p, grad in term_grads:
            group = group_of[id(p)]
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" in state and "step" in state:
                beta2 = group["betas"][1]
                v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
                grad = (grad / (v_hat.sqrt() + group.get("eps", 1e-8))).clamp(
                    -TERM_STEP_BOUND, TERM_STEP_BOUND)
            p.sub_(grad, alpha=float(group["lr"]))


#: What a model of an earlier version, whose records lack these settings, trained with
#: (before ``roi_balance``, ``roi_dilation``, ``roi_warmup`` and ``roi_conflict`` had their
#: defaults).
LEGACY_ROI_SETTINGS = {"roi_balance": "fixed", "roi_dilation": 0, "roi_warmup": 0,
                       "roi_conflict": "sum"}


def with_legacy_settings(params, names=tuple(LEGACY_ROI_SETTINGS)):
    """A copy of ``params`` (a record of an earlier version) in which each of ``names`` it
    lacks is set to what that version trained with (:data:`LEGACY_ROI_SETTINGS`)."""
    return dict({name: LEGACY_ROI_SETTINGS[name] for name in names}, **params)


def warmup_epochs(roi_warmup, max_epochs):
    """``roi_warmup`` in epochs: an int is epochs, a float in [0, 1) a share of
    ``max_epochs``; anything else is refused."""
    return epochs_from_setting(roi_warmup, max_epochs, "roi_warmup")


def check_roi_settings(roi_balance, roi_dilation, roi_warmup, roi_conflict):
    """Refuse ROI-loss settings that cannot be used, naming the parameter."""
    check_roi_balance(roi_balance)
    check_roi_conflict(roi_conflict)
    d = roi_dilation
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
        raise ValueError(f"roi_dilation must be an integer >= 0, got {d!r}.")
    warmup_epochs(roi_warmup, 1)


def resolve_roi_settings(roi_loss=None, **given):
    """The attention-loss settings, each as given or else its default, all checked.

    Parameters
    ----------
    roi_loss : str or None
        Checked against ``ROI_LOSSES``.
    **given
        Any of ``roi_weight``, ``roi_balance``, ``roi_dilation``, ``roi_warmup``,
        ``roi_conflict``; one left out or None takes its value from ``ROI_DEFAULTS``.

    Returns
    -------
    dict
        Every setting of ``ROI_DEFAULTS`` (the weight as a float).

    Raises
    ------
    ValueError
        Naming the first setting that cannot be used (or an unknown name).
    """
    unknown = set(given) - set(ROI_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown ROI setting(s) {', '.join(sorted(unknown))}; the settings "
                         f"are {', '.join(ROI_DEFAULTS)}.")
    out = {k: ROI_DEFAULTS[k] if given.get(k) is None else given[k] for k in ROI_DEFAULTS}
    out["roi_weight"] = check_roi_loss(roi_loss, out["roi_weight"])
    check_roi_settings(out["roi_balance"], out["roi_dilation"], out["roi_warmup"],
                       out["roi_conflict"])
    return out


def balanced_term(term, cross_entropy, weight, balance):
    """The attention term as added to the cross-entropy (see ``ROI_BALANCES``)."""
    if balance == "fixed":
        return weight * term
    # a nearly satisfied term is not blown up to the cross-entropy's size
    scale = cross_entropy.detach() / term.detach().clamp_min(BALANCE_FLOOR)
    return weight * scale * term


def describe_roi_training(params):
    """In words: the attention loss that estimator parameters ``params`` train with.

    >>> describe_roi_training({"roi_loss": "rank", "roi_weight": 1.5, "roi_balance": "ce",
    ...                        "roi_dilation": 2, "roi_warmup": 0.4, "max_epochs": 20,
    ...                        "roi_conflict": "project"})
    "the `rank` attention loss on the ROIs, its size 1.5 x the cross-entropy at every step, \
its gradient projected off the cross-entropy's where they conflict, ROIs grown by 2 cells, \
from epoch 9 of 20"
    """
    loss = params.get("roi_loss")
    if loss is None:
        return "no attention loss"
    params = with_legacy_settings(params)  # a record without a setting trained without it
    weight = params.get("roi_weight")
    words = f"the `{loss}` attention loss on the ROIs"
    if params["roi_balance"] == "ce":
        words += f", its size {weight:g} x the cross-entropy at every step"
    else:
        words += f" at weight {weight:g}"
    if params["roi_conflict"] == "project":
        words += ", its gradient projected off the cross-entropy's where they conflict"
    elif params["roi_conflict"] == "separate":
        words += (", its gradient projected off the cross-entropy's where they conflict and "
                  "stepped apart from the optimizer's statistics")
    dilation = params["roi_dilation"]
    if dilation:
        unit = "pixel" if loss == "counterexample" else "cell"
        words += f", ROIs grown by {dilation} {unit}{'s' if dilation != 1 else ''}"
    warmup, epochs = params["roi_warmup"], params.get("max_epochs")
    if warmup:
        if epochs:
            words += f", from epoch {warmup_epochs(warmup, epochs) + 1} of {epochs}"
        elif isinstance(warmup, numbers.Integral):
            words += f", from epoch {int(warmup) + 1}"
        else:  # a share, and no epoch count to turn it into epochs
            words += f", after the first {float(warmup):.0%} of the epochs"
    return words


def check_roi_loss(roi_loss, roi_weight):
    """Validate ``roi_loss`` / ``roi_weight``; return the weight as a float."""
    if roi_loss is not None and roi_loss not in ROI_LOSSES:
        raise ValueError(f"Unknown roi_loss {roi_loss!r}; choose one of "
                         f"{', '.join(ROI_LOSSES)} or None.")
    return check_finite_nonnegative(roi_weight, "roi_weight")


def masks_to_grid(masks, grid_shape, dilation=0):
    """ROI masks ``(N, *mask_spatial)`` -> soft masks ``(N, *grid_shape)`` in [0, 1].

    Area averaging (the share of each cell covered by the ROI), then a max
    filter of ``dilation`` cells on each side.
    """
    masks = masks.to(torch.float32)
    ndim = len(grid_shape)
    pool = F.adaptive_avg_pool2d if ndim == 2 else F.adaptive_avg_pool3d
    out = pool(masks[:, None], tuple(grid_shape))
    if dilation > 0:
        k = 2 * int(dilation) + 1
        maxpool = F.max_pool2d if ndim == 2 else F.max_pool3d
        out = maxpool(out, k, stride=1, padding=int(dilation))
    return out[:, 0]


def gradcam_from_activations(activations, logits, target, relu=True):
    """Differentiable Grad-CAM ``ReLU(sum_k w_k A_k)`` of class ``target`` per sample.

    ``w_k`` (the spatial mean of d logit_target / d A_k) is computed with
    autograd and detached: first order, see the module docstring. ``relu=False``
    returns the map before the ReLU (negative where a cell argues against the
    class).
    """
    score = logits.gather(1, target.view(-1, 1)).sum()
    grads, = torch.autograd.grad(score, activations, retain_graph=True)
    spatial = tuple(range(2, activations.dim()))
    weights = grads.mean(dim=spatial, keepdim=True).detach()
    cam = (weights * activations).sum(1)
    return F.relu(cam) if relu else cam


def _dice_loss(cam, grid_masks):
    flat = cam.reshape(len(cam), -1)
    peak = flat.amax(1, keepdim=True).clamp_min(1e-12)
    m, g = flat / peak, grid_masks.reshape(len(cam), -1).to(cam.dtype)
    return 1 - 2 * (m * g).sum(1) / (m.sum(1) + g.sum(1)).clamp_min(1e-12)


def _outside_loss(cam, grid_masks):
    m = cam.reshape(len(cam), -1)
    g = grid_masks.reshape(len(cam), -1).to(cam.dtype)
    total = m.sum(1)
    # a blank map has no mass anywhere, so none outside
    return torch.where(total > 0, (m * (1 - g)).sum(1) / total.clamp_min(1e-12),
                       torch.zeros_like(total))


def _coarsened(cam, grid_masks, max_cells):
    """Area-average a map and its mask to at most ``max_cells`` cells."""
    spatial = tuple(cam.shape[1:])
    cells = math.prod(spatial)
    if cells <= max_cells:
        return cam, grid_masks
    factor = math.ceil((cells / max_cells) ** (1 / len(spatial)))
    target = tuple(max(1, math.ceil(s / factor)) for s in spatial)
    while math.prod(target) > max_cells:
        factor += 1
        target = tuple(max(1, math.ceil(s / factor)) for s in spatial)
    pool = F.adaptive_avg_pool2d if len(spatial) == 2 else F.adaptive_avg_pool3d
    return (pool(cam[:, None], target)[:, 0],
            pool(grid_masks[:, None].to(cam.dtype), target)[:, 0])


def _rank_loss(cam, grid_masks):
    cam, grid_masks = _coarsened(cam, grid_masks, RANK_MAX_CELLS)
    c = cam.reshape(len(cam), -1)
    g = grid_masks.reshape(len(cam), -1).to(cam.dtype)
    # standardised, so neither scaling the map nor shifting it changes the loss
    # (population std: defined for a single cell, whose map has no pairs anyway)
    s = (c - c.mean(1, keepdim=True)) / c.std(1, correction=0, keepdim=True).clamp_min(1e-6)
    pairs = g[:, :, None] * (1 - g)[:, None, :]  # (inside cell i, outside cell j)
    per_pair = F.softplus(s[:, None, :] - s[:, :, None])  # [b, i, j] = softplus(s_j - s_i)
    # a mask covering all or nothing has no pairs and adds nothing
    return (pairs * per_pair).sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1e-12)


def counterexamples(x, masks, has_roi, dilation=0):
    """Each image with an ROI, its context replaced by another's (``"counterexample"``).

    Parameters
    ----------
    x : tensor (B, C, ...)
    masks : bool tensor (B, ...) at any resolution with the images' aspect ratio
    has_roi : bool tensor (B,)
    dilation : int
        Pixels by which each ROI is grown before it is kept.

    Returns
    -------
    tensor (n, C, ...)
        One counterexample per image with an ROI, in batch order: the image
        inside its (grown) ROI, and outside it the next such image of the batch
        (cyclically) with that image's own ROI set to 0. With a single such
        image it is the image itself.
    """
    x = x[has_roi]
    keep = (masks_to_grid(masks[has_roi], tuple(x.shape[2:]), dilation) > 0)[:, None]
    keep = keep.to(x.dtype)
    order = torch.roll(torch.arange(len(x), device=x.device), -1)
    context = x[order] * (1 - keep[order])
    return keep * x + (1 - keep) * context


def _rrr_loss(x, logits, masks):
    log_p = F.log_softmax(logits, dim=1).sum()
    grads, = torch.autograd.grad(log_p, x, create_graph=True)
    inside = masks_to_grid(masks, tuple(x.shape[2:]))[:, None]  # to the input's resolution
    outside = (1 - (inside > 0).to(grads.dtype))
    return ((grads * outside) ** 2).reshape(len(x), -1).sum(1)


def roi_loss_term(kind, *, x, logits, activations, target, masks, has_roi, dilation=0,
                  forward=None):
    """Mean attention loss over the samples of a batch that have an ROI.

    Parameters
    ----------
    kind : one of ``ROI_LOSSES``
    x : tensor (B, C, ...)
        The input batch; for ``"rrr"`` it must require gradients.
    logits : tensor (B, n_classes)
    activations : tensor (B, K, ...) or None
        Output of the Grad-CAM layer in the same forward pass (the
        ``GRADCAM_LOSSES``).
    target : int tensor (B,)
        True class column of each sample.
    masks : bool tensor (B, ...)
        At any resolution with the images' aspect ratio.
    has_roi : bool tensor (B,)
    dilation : int
        Cells by which the mask is grown on the attention grid (pixels of the
        input for ``"counterexample"``).
    forward : callable, optional
        Maps a batch of images to logits in training mode (``"counterexample"``).

    Returns
    -------
    scalar tensor
        0 (with no graph) when no sample of the batch has an ROI.
    """
    if not bool(has_roi.any()):
        return logits.new_zeros(())
    if kind == "counterexample":
        return F.cross_entropy(forward(counterexamples(x, masks, has_roi, dilation)),
                               target[has_roi])
    if kind == "rrr":
        per_sample = _rrr_loss(x, logits, masks)
    else:
        cam = gradcam_from_activations(activations, logits, target, relu=kind != "rank")
        grid = masks_to_grid(masks, tuple(cam.shape[1:]), dilation)
        per_sample = {"dice": _dice_loss, "outside": _outside_loss,
                      "rank": _rank_loss}[kind](cam, grid)
    return per_sample[has_roi].mean()
