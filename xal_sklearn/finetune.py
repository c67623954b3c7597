"""Fine-tuning from a warm start: how a fresh head meets pretrained features.

A network that starts from pretrained features (``init_weights``, a backbone's
``module__weights``) gets a fresh, random last linear layer. Trained together from
the first step, that head's large random gradients flow into the pretrained
layers and wash out what they learnt before the head is any good; fitting the head
on frozen features first and only then everything ("linear probing, then
fine-tuning", Kumar et al., ICLR 2022) keeps them. Two ways, as skorch callbacks:

* :class:`ProbeHead` starts the head from a logistic regression on the frozen
  features (``CNNClassifier(head_init="probe")``);
* :class:`FreezeEncoder` trains the head alone for the first epochs
  (``CNNClassifier(freeze_epochs=...)``).

On brain MRI (validation groups, 570 labels, SimCLR on the pool) the first pays
and the second does not (docs/results.md, "A warm start from the pool").
"""

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from skorch.callbacks import Callback
from skorch.dataset import unpack_data

from ._names import HEAD_INITS
from ._validation import check_finite_nonnegative, epochs_from_setting
from .embedding import find_head
from .pretrain import encoder_features

__all__ = ["FreezeEncoder", "HEAD_INITS", "ProbeHead", "WarmStartWarning", "check_head_init",
           "freeze_epoch_count", "probe_scale", "warn_random_head"]


class WarmStartWarning(UserWarning):
    """A warm start trains from a random head, which loses most of what it gives."""


def warn_random_head():
    """Say what a warm start with a random head leaves out (once per call site, as
    Python's warnings do by default)."""
    warnings.warn(
        "init_weights with head_init='random' starts the last layer at random, and the "
        "first steps' large gradients wash much of the pretraining out: on brain MRI "
        "(validation groups, 570 labels) the probe head gave 0.795 against 0.713 "
        "(research/probe_warm_start.py). Pass head_init='probe' (what xal run --pretrain "
        "and campaigns use), or freeze_epochs, or silence WarmStartWarning if the random "
        "head is meant.", WarmStartWarning, stacklevel=4)


def check_head_init(head_init):
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {', '.join(map(repr, HEAD_INITS))}, "
                         f"got {head_init!r}.")


def freeze_epoch_count(freeze_epochs, max_epochs):
    """``freeze_epochs`` in epochs: an int is epochs (at most ``max_epochs``), a float
    in [0, 1] a share of ``max_epochs``; anything else is refused."""
    count = epochs_from_setting(freeze_epochs, max_epochs, "freeze_epochs", whole=True)
    return min(count, int(max_epochs))


class FreezeEncoder(Callback):
    """Train only the network's last linear layer for the first epochs of each fit.

    Every parameter outside the head (the module's last ``nn.Linear``) has
    ``requires_grad`` off for the first ``epochs`` epochs after training starts
    and on again afterwards, and at the end of training whatever happens (so an
    interrupted fit never leaves a frozen network behind). Batch-norm statistics
    still adapt to the new data while frozen; the optimizer skips parameters
    without gradients.

    Parameters
    ----------
    epochs : int >= 0 or float in [0, 1]
        Epochs with the encoder frozen; a float is a share of ``net.max_epochs``.
        ``1.0`` (or ``max_epochs``) freezes it for the whole fit: a linear probe.
    """

    def __init__(self, epochs):
        self.epochs = epochs

    def _encoder(self, net):
        head = {id(p) for p in find_head(net.module_).parameters()}
        return [p for p in net.module_.parameters() if id(p) not in head]

    def _set(self, net, trainable):
        for p in self._encoder(net):
            p.requires_grad_(trainable)

    def on_train_begin(self, net, **kwargs):
        self.frozen_for_ = freeze_epoch_count(self.epochs, net.max_epochs)
        self.epoch_ = 0

    def on_epoch_begin(self, net, **kwargs):
        self.epoch_ += 1
        self._set(net, self.epoch_ > self.frozen_for_)

    def on_train_end(self, net, **kwargs):
        self._set(net, True)


def probe_scale(F, sd_floor):
    """The divisor of each column of ``F`` in :class:`ProbeHead`.

    Parameters
    ----------
    F : ndarray of shape (n_samples, n_features)
    sd_floor : float >= 0
        The smallest divisor, as a share of the median column's standard deviation.

    Returns
    -------
    ndarray of shape (n_features,)
        Each column's standard deviation, at least ``sd_floor`` times the median
        column's, plus 1e-6 (so a constant column is never divided by zero).
    """
    check_finite_nonnegative(sd_floor, "sd_floor")
    sd = F.std(0)
    return np.maximum(sd, sd_floor * np.median(sd)) + 1e-6


class ProbeHead(Callback):
    """Start each fit's head from a linear probe of the network's features.

    Before the first epoch, the training images go through the network in
    evaluation mode; a scikit-learn ``LogisticRegression`` (L2, ``C``) is fitted
    on their standardised features (the inputs of the last linear layer) and
    labels, and folded into that layer (standardisation included), so training
    starts from features and a head that already agree.

    A feature is divided by its standard deviation, but never by less than
    ``sd_floor`` times the median feature's (by default the median itself).
    Without that floor a nearly dead channel (a ReLU that fires on a handful of
    images, common in weakly pretrained or random networks) would be blown up to
    unit variance and fold into a weight of thousands; once fine-tuning revives
    the channel, its logit jumps by as much and training collapses. With the
    floor such a channel is shrunk by the L2 penalty like any near-constant
    feature. Brain MRI, validation groups (``research/probe_warm_start.py``):
    after one epoch of SimCLR, 100 labels, exact standardisation gave 0.455
    accuracy (three label draws, the worst 0.316) against 0.619 from scratch,
    and the default floor 0.657; after 50 epochs, 570 labels, the floor changes
    little (0.795 against 0.794), and a floor of 3 costs 1.3 points.

    Classes missing from the labelled images keep zero weights and a bias below
    every other class's. It acts only on a freshly initialised network (empty
    history), so a ``partial_fit`` that continues training keeps its head; with
    fewer than two classes it does nothing. ``CNNClassifier(head_init="probe")``
    uses the defaults; pass ``callbacks=[("probe", ProbeHead(...))]`` for others.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 strength of the logistic regression.
    max_iter : int, default=2000
    sd_floor : float >= 0, default=1.0
        The smallest divisor of a feature, as a share of the median feature's
        standard deviation; 0 standardises every feature exactly.
    """

    def __init__(self, C=1.0, max_iter=2000, sd_floor=1.0):
        self.C = C
        self.max_iter = max_iter
        self.sd_floor = sd_floor

    def initialize(self):
        # at the net's initialisation, before any training
        check_finite_nonnegative(self.sd_floor, "sd_floor")
        return super().initialize()

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if len(net.history):
            return
        module = net.module_
        training = module.training
        module.eval()
        feats, labels = [], []
        with torch.no_grad():
            for batch in net.get_iterator(net.get_dataset(X, y), training=False):
                Xi, yi = unpack_data(batch)
                x = Xi["x"] if isinstance(Xi, Mapping) else Xi
                feats.append(encoder_features(module, x.to(net.device)).float().cpu())
                labels.append(torch.as_tensor(yi).cpu())
        module.train(training)
        F, t = torch.cat(feats).numpy().astype(np.float64), torch.cat(labels).numpy()
        present = np.unique(t)
        if len(present) < 2:
            return
        mu, sd = F.mean(0), probe_scale(F, self.sd_floor)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter).fit((F - mu) / sd, t)
        coef, intercept = clf.coef_, clf.intercept_
        if len(present) == 2:  # one logit for class 1; split it as +-1/2 between the two
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.r_[-intercept, intercept] / 2
        head = find_head(module)
        n_out = head.weight.shape[0]
        W = np.zeros((n_out, F.shape[1]))
        b = np.full(n_out, intercept.min() - 10.0)
        W[present], b[present] = coef / sd, intercept - (coef / sd) @ mu
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(W, dtype=head.weight.dtype))
            if head.bias is not None:
                head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))
