"""Pool scoring spread over a Dask cluster (the ``dask`` extra).

:func:`~xal_sklearn.score_pool` with ``client=`` (or inside :func:`scoring_on`) splits
the pool into shards of whole batches, sends the fitted network to every worker once
(``Client.scatter(..., broadcast=True)``), scores each shard on a worker with
:func:`~xal_sklearn.scoring.raw_scores`, and finishes the pool-level part (the combined
score, which for images without an ROI reads the rest of the pool) where it was called.
Shards start at multiples of the batch size, so every batch is the batch a local call
would form and the Bunch is the local call's.

Where the data is: a pool memory-mapped from a ``.npy`` file (the loader's and the
campaigns' caches) goes to the workers as the file's name and offset and is mapped
there, so on a cluster sharing a file system nothing but the scores travels; in-memory
arrays travel shard by shard; a torch ``Dataset`` travels as a ``Subset`` of itself
(it must pickle, and read its files from where the workers run).

A worker lost while scoring: Dask computes its shard again on another one; a shard that
cannot be scored makes the call fail naming its rows, never returning partial scores.
"""

import contextlib
import contextvars
import mmap

import numpy as np

__all__ = ["scoring_on", "current_client", "raw_scores_on_cluster"]

_CLIENT = contextvars.ContextVar("xal_scoring_client", default=None)
#: Seconds a scheduler named by its address has to answer.
CONNECT_TIMEOUT = 10


@contextlib.contextmanager
def scoring_on(client):
    """Send every :func:`~xal_sklearn.score_pool` in the block to ``client``'s cluster
    (a ``dask.distributed.Client`` or a scheduler's address), and with it the strategies
    built on it (``dual_criterion_sampling``, ``dual_kcenter``, ``dual_cluster``,
    ``misalignment_sampling``): the Grad-CAM pass is the expensive one. The uncertainty
    and embedding baselines make one forward pass of their own, locally."""
    owned = None
    if isinstance(client, str):
        client = owned = connect(client)
    token = _CLIENT.set(client)
    try:
        yield client
    finally:
        _CLIENT.reset(token)
        if owned is not None:
            owned.close()


def current_client():
    """The client of the innermost :func:`scoring_on` block, or None."""
    return _CLIENT.get()


def connect(address):
    """A client of the scheduler at ``address``; a clear error if none answers."""
    try:
        from distributed import Client
    except ImportError:
        raise ImportError("Scoring on a Dask cluster needs dask.distributed: "
                          "pip install 'xal-sklearn[dask]'.") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"No Dask scheduler answers at {address} within {CONNECT_TIMEOUT} s "
                         f"({exc}); start one (dask scheduler, dask worker) or check the "
                         "address.") from None


class _Mapped:
    """A memory-mapped ``.npy`` array named by its file: re-mapped on the worker."""

    def __init__(self, array):
        self.filename, self.offset = str(array.filename), int(array.offset)
        self.dtype, self.shape = array.dtype, array.shape
        self.order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"

    def open(self):
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape, order=self.order)


def _portable(a):
    """``a`` as it travels to a worker: a whole mapped file by name, else itself."""
    if (isinstance(a, np.memmap) and getattr(a, "filename", None)
            and isinstance(a.base, mmap.mmap)
            and (a.flags.c_contiguous or a.flags.f_contiguous)):
        return _Mapped(a)
    return a


def _shard(a, start, stop):
    """Rows ``start:stop`` of a pool or its masks, as cheaply as the kind allows."""
    if a is None:
        return None
    if isinstance(a, _Mapped):
        return a  # sliced on the worker
    if isinstance(a, (list, tuple)):
        return list(a[start:stop])
    if hasattr(a, "shape"):
        return a[start:stop]
    from torch.utils.data import Subset

    return Subset(a, range(start, stop))


def _score_shard(classifier, X, masks, start, stop, settings):
    from ._memory import reuse_freed_memory
    from .scoring import raw_scores

    if isinstance(X, _Mapped):
        X = X.open()[start:stop]
    if isinstance(masks, _Mapped):
        masks = masks.open()[start:stop]
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, so glibc hands every freed
    # activation back to the kernel and the next batch faults it in again: a shard
    # scored 3x slower than the same call outside Dask (docs/benchmarks.md)
    with reuse_freed_memory():
        return raw_scores(classifier, X, masks, **settings)


def raw_scores_on_cluster(client, classifier, X_pool, roi_masks, settings, progress=None,
                          shards=None):
    """:func:`~xal_sklearn.scoring.raw_scores` of the whole pool, shard by shard on the
    cluster of ``client`` (a client or an address), concatenated in the pool's order."""
    from distributed import as_completed

    from ._pool import pool_length, progress_bar

    owned = None
    if isinstance(client, str):
        client = owned = connect(client)
    try:
        n = pool_length(X_pool)
        batch = int(settings["batch_size"])
        workers = max(1, sum(client.nthreads().values()))
        shards = shards or 2 * workers  # a lost or slow worker delays a small part
        per = max(1, -(-n // (shards * batch))) * batch  # whole batches per shard
        bounds = [(a, min(a + per, n)) for a in range(0, n, per)] or [(0, 0)]
        net = client.scatter(classifier, broadcast=True, hash=False)  # once per worker
        X, masks = _portable(X_pool), _portable(roi_masks)
        futures = {client.submit(_score_shard, net, _shard(X, a, b), _shard(masks, a, b), a,
                                 b, settings, pure=False, retries=1): k
                   for k, (a, b) in enumerate(bounds)}
        parts = [None] * len(bounds)
        for future in progress_bar(as_completed(futures), progress, len(bounds),
                                   "Scoring pool on the cluster"):
            k = futures[future]
            try:
                parts[k] = future.result()
            except Exception as exc:
                for other in futures:
                    other.cancel()
                a, b = bounds[k]
                raise RuntimeError(f"Scoring shard {k} (pool rows {a}-{b - 1}) failed on the "
                                   f"cluster: {type(exc).__name__}: {exc}; no scores were "
                                   "returned.") from exc
    finally:
        if owned is not None:
            owned.close()
    from sklearn.utils import Bunch

    res = Bunch(grid_shape=parts[0].grid_shape)
    for key in parts[0]:
        if key != "grid_shape":
            res[key] = np.concatenate([p[key] for p in parts])
    return res
