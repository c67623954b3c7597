"""The bridge to scikit-activeml, imported only when a strategy needs it.

scikit-activeml takes a few seconds to import, so ``import xal_sklearn`` does
not load it; :func:`require` does, with an error that says how to get it.
"""

import importlib

import numpy as np

#: The versions these adapters are written and tested against (also in setup.cfg).
SUPPORTED = ">=1.0.1,<1.1"


def require():
    """``skactiveml.pool``, or an ImportError that says what to install."""
    try:
        return importlib.import_module("skactiveml.pool")
    except ImportError as exc:
        raise ImportError(
            "This strategy runs scikit-activeml's implementation, which is not installed "
            f"({exc}). Install it with: pip install 'scikit-activeml{SUPPORTED}' "
            "(it is a dependency of xal-sklearn, so reinstalling xal-sklearn also brings "
            "it).") from exc


def head_classifier(net):
    """A scikit-activeml classifier over a fitted network's last linear layer.

    Its inputs are the network's penultimate features (see
    :func:`xal_sklearn.embedding.pool_embeddings`): ``predict_proba`` applies the
    network's own head and output nonlinearity, so on the features of an image
    it returns what the network returns on the image; ``sample_proba`` draws MC
    dropout samples (:func:`xal_sklearn.embedding.mc_dropout_proba`). It never
    trains: strategies are called with ``fit_clf=False`` / ``fit_ensemble=False``.
    """
    import torch
    from skactiveml.base import SkactivemlClassifier

    from .embedding import find_head, mc_dropout_proba

    head = find_head(net.module_)
    weight = head.weight.detach().float().cpu()
    bias = None if head.bias is None else head.bias.detach().float().cpu()
    nonlinearity = net._get_predict_nonlinearity()

    class NetworkHead(SkactivemlClassifier):
        def __init__(self, random_state=None):
            super().__init__(classes=np.arange(weight.shape[0]), missing_label=np.nan,
                             random_state=random_state)

        def __sklearn_is_fitted__(self):
            return True  # the network is fitted; nothing here learns

        def fit(self, X, y, sample_weight=None):
            raise TypeError("NetworkHead wraps an already fitted network and does not train; "
                            "call the strategy with fit_clf=False.")

        def predict_proba(self, X, **kwargs):
            h = torch.as_tensor(np.asarray(X, dtype=np.float32))
            with torch.no_grad():
                logits = torch.nn.functional.linear(h, weight, bias)
                return nonlinearity(logits).double().numpy()

        def sample_proba(self, X, n_samples=20):
            if not hasattr(self, "_rng"):
                self._rng = np.random.RandomState(self.random_state)
            return mc_dropout_proba(net, X, n_samples, self._rng).astype(np.float64)

    return NetworkHead


def k_center(embeddings, n_instances, first, random_state=None):
    """Greedy k-center over ``embeddings``, seeded with row ``first``.

    scikit-activeml's ``k_greedy_center``: each next row is the one farthest
    (euclidean) from every row chosen so far. Returns ``n_instances`` rows,
    ``first`` first.
    """
    pool = require()
    y = np.full(len(embeddings), np.nan)
    y[first] = 0.0  # "labelled": the first centre
    if n_instances == 1:
        return np.array([first], dtype=np.intp)
    rest = pool.k_greedy_center(np.asarray(embeddings, dtype=np.float64), y,
                                batch_size=n_instances - 1, random_state=random_state)[0]
    return np.concatenate([[first], np.asarray(rest, dtype=np.intp)])
