"""What a network's last layer sees: penultimate features, BADGE's gradient embeddings, MC dropout.

Diversity-based strategies (core-set, TypiClust, ProbCover, BADGE) compare pool
images in the network's own feature space, the input of its last linear layer.
This module finds that layer, captures its input with a forward pre-hook during
the pass that also gives the probabilities (so no strategy runs a second pass),
and derives from it what the strategies need:

* ``embeddings``: the features, ``(N, D)``;
* ``gradient_embeddings``: BADGE's gradient of the cross-entropy at the
  predicted label with respect to the last layer's weights, which for
  ``logits = W h + b`` is ``(p - onehot(argmax p)) outer h``, ``(N, C * D)``,
  with no extra backward pass;
* :func:`mc_dropout_proba`: Monte-Carlo dropout samples of the probabilities,
  exact for networks whose only dropout feeds the last linear layer (as in
  :class:`~xal_sklearn.SmallCNN`): the layers below are deterministic in eval
  mode, so sampling the dropout mask on the captured features is the same as
  running the whole network again, at the cost of one matrix product per
  sample instead of one pass over the pool.
"""

from contextlib import nullcontext

import numpy as np
import torch
from sklearn.utils import Bunch, check_random_state
from torch import nn

from ._pool import iter_pool, pool_length, progress_bar, reads_ahead
from ._validation import probing, resolve_estimator
from .modules import CPU_CHUNK_SIZE, channels_last_weights

__all__ = ["EmbeddingCapture", "EmbeddingError", "find_head", "gradient_embeddings", "head_dropout",
           "mc_dropout_proba", "pool_embeddings"]


class EmbeddingError(ValueError):
    """The network cannot give what an embedding-based strategy needs."""


def find_head(module):
    """The network's last ``nn.Linear`` (registration order): its input is the embedding.

    Raises
    ------
    EmbeddingError
        If the module has no linear layer.
    """
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise EmbeddingError(
            f"{type(module).__name__} has no nn.Linear layer, so it has no penultimate "
            "features for embedding-based strategies (badge, coreset, typiclust, probcover, "
            "bald, diversity=...). Give the network a linear classification head "
            "(SmallCNN has one) or use a strategy that needs only probabilities.")
    return linears[-1]


def head_dropout(module):
    """Dropout probability of the ``nn.Dropout`` that feeds the last linear layer.

    Raises
    ------
    EmbeddingError
        If there is none (or it is 0), or if other dropout layers with ``p > 0``
        sit elsewhere in the network (their masks cannot be sampled on the
        captured features, so MC dropout on the head would not be exact).
    """
    head = find_head(module)
    order = list(module.modules())
    at = next(i for i, m in enumerate(order) if m is head)
    before = next((m for m in reversed(order[:at])
                   if not isinstance(m, (nn.Flatten, nn.Identity, nn.Sequential))), None)
    feeding = before if isinstance(before, nn.Dropout) else None
    others = [m for m in order if isinstance(m, nn.modules.dropout._DropoutNd)
              and m is not feeding and m.p > 0]
    if feeding is None or feeding.p <= 0:
        raise EmbeddingError(
            f"MC dropout needs dropout in front of the last linear layer of "
            f"{type(module).__name__}, and it has "
            f"{'none' if feeding is None else 'p=0'}; with SmallCNN train with "
            "CNNClassifier(module__dropout=0.25) (or another p > 0).")
    if others:
        raise EmbeddingError(
            f"{type(module).__name__} has dropout layers besides the one feeding its last "
            f"linear layer ({', '.join(type(m).__name__ for m in others)}); MC dropout here "
            "samples only the head's dropout, which would not be exact for this network.")
    return float(feeding.p)


class EmbeddingCapture:
    """Forward pre-hook on the head: keeps its inputs (the embeddings), chunk by chunk."""

    def __init__(self, module):
        self.head = find_head(module)
        self.parts = []

    def __enter__(self):
        self._handle = self.head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False

    def _hook(self, _module, inputs):
        if probing():  # a shape check's zero image (a new input size), not the batch
            return
        self.parts.append(inputs[0].detach().reshape(len(inputs[0]), -1))

    def take(self, logits):
        """The features of the batch whose ``logits`` were just computed.

        Checks once per batch that the head's output on them is the logits:
        otherwise the last linear layer is not the network's output (something
        follows it) and neither the features nor BADGE's shortcut would mean
        what they say.
        """
        feats = torch.cat(self.parts) if len(self.parts) > 1 else self.parts[0]
        self.parts = []
        if len(feats) != len(logits):
            raise EmbeddingError(
                f"The last linear layer ran on {len(feats)} rows for a batch of "
                f"{len(logits)}; it is not the network's classification head.")
        with torch.no_grad():  # functional: calling the module would fire the hook again
            again = torch.nn.functional.linear(feats.to(self.head.weight.dtype),
                                               self.head.weight, self.head.bias).float()
        if again.shape != logits.shape or not torch.allclose(again, logits.float(),
                                                             rtol=1e-3, atol=1e-3):
            raise EmbeddingError(
                "The network's output is not its last linear layer's output (another layer "
                "follows it), so that layer's input is not an embedding the strategies "
                "can use.")
        return feats.float()


def gradient_embeddings(proba, embeddings):
    """BADGE's gradient embeddings: ``(p - onehot(argmax p)) outer h``, flattened.

    The gradient of the cross-entropy at the predicted label with respect to
    the weights of ``logits = W h + b`` (Ash et al., ICLR 2020).

    Parameters
    ----------
    proba : ndarray (N, C)
    embeddings : ndarray (N, D)

    Returns
    -------
    ndarray of float32 (N, C * D)
    """
    proba = np.asarray(proba, dtype=np.float32)
    h = np.asarray(embeddings, dtype=np.float32)
    factor = proba - np.eye(proba.shape[1], dtype=np.float32)[proba.argmax(1)]
    return (factor[:, :, None] * h[:, None, :]).reshape(len(h), -1)


def pool_embeddings(classifier, X_pool, *, gradient=False, batch_size=None, num_workers=0,
                    progress=None):
    """Probabilities and penultimate features of a pool in one forward pass.

    A forward pass like ``predict_proba``'s (eval mode, no gradients; on the CPU
    channels-last weights and chunks of
    :data:`~xal_sklearn.modules.CPU_CHUNK_SIZE` images, as scoring runs, which
    measured 1.5x faster than ``predict_proba``'s batches of 64) with the input
    of the last linear layer captured, so a strategy that needs only embeddings
    costs less than one ``predict_proba``. Streams the
    pool like :func:`~xal_sklearn.score_pool` (arrays, memmaps, Datasets;
    a Pipeline's preceding steps applied per batch).

    Parameters
    ----------
    classifier : fitted CNNClassifier, Pipeline ending in one, or active learner
    X_pool : array-like (N, C, H, W), memmap or torch Dataset
    gradient : bool, default=False
        Also return BADGE's gradient embeddings.
    batch_size : int, optional
        Default: the estimator's ``batch_size``.
    num_workers : int, default=0
    progress : bool or None, default=None

    Returns
    -------
    Bunch with ``proba`` (N, C) float32, ``embeddings`` (N, D) float32 and, with
    ``gradient=True``, ``gradient_embeddings`` (N, C * D) float32.

    Raises
    ------
    EmbeddingError
        If the network has no linear head whose output is the logits.
    """
    net, preprocess = resolve_estimator(classifier)
    module = net.module_
    n = pool_length(X_pool)
    batch_size = int(batch_size or net.batch_size)
    head = find_head(module)
    nonlinearity = net._get_predict_nonlinearity()
    device = torch.device(net.device) if net.device is not None else torch.device("cpu")
    res = Bunch(proba=np.empty((n, len(net.classes_)), dtype=np.float32),
                embeddings=np.empty((n, head.in_features), dtype=np.float32))
    was_training = module.training
    module.eval()
    layout = channels_last_weights(module) if device.type == "cpu" else nullcontext()
    try:
        with layout, EmbeddingCapture(module) as capture, torch.no_grad():
            batches = iter_pool(X_pool, None, batch_size, preprocess, num_workers,
                                read_ahead=reads_ahead(net, None))
            for x, _, _, start in progress_bar(batches, progress, -(-n // batch_size),
                                               "Embedding pool"):
                # on the CPU in chunks, as scoring does: faster than whole batches there
                step = CPU_CHUNK_SIZE if device.type == "cpu" else len(x)
                for offset in range(0, len(x), step):
                    logits = net.infer(x[offset:offset + step].to(device))
                    if isinstance(logits, (tuple, list)):
                        logits = logits[0]
                    rows = slice(start + offset, start + offset + len(logits))
                    res.embeddings[rows] = capture.take(logits).cpu().numpy()
                    res.proba[rows] = nonlinearity(logits).float().cpu().numpy()
    finally:
        module.train(was_training)
    if gradient:
        res.gradient_embeddings = gradient_embeddings(res.proba, res.embeddings)
    return res


def mc_dropout_proba(classifier, embeddings, n_samples=20, random_state=None):
    """Monte-Carlo dropout probabilities from captured penultimate features.

    Each sample draws a fresh dropout mask (the network's own head dropout
    probability ``p``, inverted scaling as in ``nn.Dropout``) on the
    embeddings and applies the last linear layer and the output nonlinearity.
    For a network whose only dropout feeds that layer this is exactly MC
    dropout through the whole network (see the module docstring), from one
    pass over the pool.

    Parameters
    ----------
    classifier : fitted CNNClassifier, Pipeline ending in one, or active learner
    embeddings : ndarray (N, D)
        From :func:`pool_embeddings`.
    n_samples : int, default=20
    random_state : int, RandomState instance or None

    Returns
    -------
    ndarray of float32 (n_samples, N, C)
    """
    net, _ = resolve_estimator(classifier)
    p = head_dropout(net.module_)
    head = find_head(net.module_)
    n_samples = int(n_samples)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
    seed = int(check_random_state(random_state).randint(2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    h = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    nonlinearity = net._get_predict_nonlinearity()
    weight = head.weight.detach().float().cpu()
    bias = None if head.bias is None else head.bias.detach().float().cpu()
    out = np.empty((n_samples, len(h), weight.shape[0]), dtype=np.float32)
    with torch.no_grad():
        for s in range(n_samples):
            keep = torch.rand(h.shape, generator=gen) >= p
            logits = torch.nn.functional.linear(h * keep / (1 - p), weight, bias)
            out[s] = nonlinearity(logits).numpy()
    return out
