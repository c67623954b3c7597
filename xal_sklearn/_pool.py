"""Streaming access to a pool of images (and their ROI masks) in batches.

A pool is an in-memory array or tensor, a numpy memmap, or a
``torch.utils.data.Dataset``; masks likewise. Batches are read on demand, so
a pool larger than memory is never loaded whole. With ``read_ahead`` one
background thread reads the next batches while the caller computes on the current
one, so reading (decoding files, a Dataset's own work) and the network overlap
and whichever is slower sets the pace.
"""

import queue
import threading

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from ._validation import check_finite_batch, check_numeric, check_roi_masks


def pool_length(X):
    try:
        return len(X)
    except TypeError:
        raise TypeError(
            f"The pool must be an array, a tensor or a sized torch Dataset; got {type(X).__name__}."
        ) from None


def _as_index(batch_idx):
    if len(batch_idx) and batch_idx[-1] - batch_idx[0] == len(batch_idx) - 1:
        return slice(batch_idx[0], batch_idx[-1] + 1)  # contiguous: cheap view of a memmap
    return np.asarray(batch_idx)


def _stack(items, what):
    try:
        return np.stack([np.asarray(torch.as_tensor(i)) for i in items])
    except Exception as exc:
        raise ValueError(f"Could not stack {what} items of the pool Dataset: {exc}") from exc


def as_batch_tensor(a, dtype=np.float32):
    """One batch as a C-contiguous, writeable tensor of ``dtype``.

    Casts any numeric dtype (float16/64, integers, bool) and any layout (strided,
    transposed or reversed views, memmaps) batch by batch, so a large pool is
    never copied whole.
    """
    out = np.ascontiguousarray(a, dtype=dtype)
    # a read-only memmap slice needs its own copy; so does a reversed axis of length 1,
    # which numpy counts as contiguous but torch refuses for its negative stride
    if not out.flags.writeable or any(s < 0 for s in out.strides):
        out = out.copy()
    return torch.from_numpy(out)


class _PoolBatches(Dataset):
    """Maps a list of indices to ``(images float32, masks bool or None, start)``."""

    def __init__(self, X, masks, preprocess):
        self.X, self.masks, self.preprocess = X, masks, preprocess

    def __len__(self):
        return pool_length(self.X)

    def _fetch(self, source, idx):
        if isinstance(source, (Dataset, list, tuple)):
            rows = range(idx.start, idx.stop) if isinstance(idx, slice) else idx
            rows = [int(i) for i in rows]
            # torch's batched-fetch hook: a Dataset may read a batch at once (in threads)
            getitems = getattr(source, "__getitems__", None)
            return list(getitems(rows)) if getitems else [source[i] for i in rows]
        if isinstance(source, torch.Tensor):
            return source[idx].detach().cpu().numpy()
        return np.asarray(source[idx])

    def __getitem__(self, batch_idx):
        idx = _as_index(batch_idx)
        x = self._fetch(self.X, idx)
        m = None
        if isinstance(x, list):  # Dataset or list items: image or (image, mask)
            if isinstance(x[0], (tuple, list)):
                m = [item[1] for item in x]
                x = [item[0] for item in x]
            x = _stack(x, "image")
        if self.masks is not None:
            m = self._fetch(self.masks, idx)
        if m is not None and isinstance(m, list):
            m = m if any(v is None for v in m) else _stack(m, "mask")
        if self.preprocess is not None:
            x = self.preprocess.transform(x)
        x = np.asarray(x)
        if x.ndim not in (4, 5):
            raise ValueError(
                "Pool images must be image-shaped (n, channels, height, width) or "
                f"(n, channels, depth, height, width); got a batch of shape {x.shape}."
            )
        check_numeric(x, "X_pool")
        x = as_batch_tensor(x)
        masks, available = check_roi_masks(m, len(x), x.shape[2:])
        return x, as_batch_tensor(masks, bool), torch.from_numpy(available), int(batch_idx[0])


def iter_pool(X, masks=None, batch_size=128, preprocess=None, num_workers=0, name="X_pool",
              read_ahead=False):
    """Yield ``(x, masks, available, start)`` batches of a pool, in order.

    ``x`` is a finite float32 tensor on the CPU; NaN or inf raises a
    ``ValueError`` naming the first bad index. ``read_ahead`` (with
    ``num_workers=0``; DataLoader workers prefetch on their own): a thread
    reads the next batches meanwhile.
    """
    n = pool_length(X)
    if masks is not None and not (isinstance(masks, (list, tuple)) and len(masks) == 0):
        if pool_length(masks) != n:
            raise ValueError(f"roi_masks has {pool_length(masks)} masks but the pool has {n} images.")
    sampler = BatchSampler(SequentialSampler(range(n)), batch_size=batch_size, drop_last=False)
    loader = DataLoader(_PoolBatches(X, masks, preprocess), sampler=sampler, batch_size=None,
                        num_workers=num_workers)
    ahead = read_ahead and num_workers == 0
    for x, m, avail, start in (read_ahead_of(loader) if ahead else loader):
        check_finite_batch(x, name, offset=start)
        yield x, m, avail, start


class _Raised:
    def __init__(self, exc):
        self.exc = exc


_END = object()


def read_ahead_of(iterable, depth=2):
    """Yield the items of ``iterable`` in order, read by a background thread that stays
    up to ``depth`` items ahead of the consumer.

    An exception in the reader is raised in the consumer at the item where it
    happened. When the consumer stops early (an exception, ``break``, Ctrl-C) the
    reader stops after the item it is reading and is joined before this returns, so
    nothing keeps reading behind the caller's back.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def reader():
        try:
            for item in iterable:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Raised(exc))

    thread = threading.Thread(target=reader, name="xal-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


def reads_ahead(net, read_ahead):
    """``read_ahead`` of :func:`score_pool`: None reads ahead when the network runs on an
    accelerator. On the CPU the network already uses every core and reading beside it
    did not pay (2 cores, ``benchmarks/bench_pool_files.py``: 10,000
    files of 256 px 12.7 s pipelined against 8.8 s in turn; arrays with masks 4.40 s
    against 4.16 s, without 3.5 s against 3.9 s)."""
    if read_ahead is None:
        return torch.device(net.device or "cpu").type != "cpu"
    return bool(read_ahead)


def progress_bar(iterable, progress, total, desc):
    """tqdm over ``iterable``; ``progress`` None shows it only on a terminal."""
    from tqdm.auto import tqdm

    disable = None if progress is None else not progress
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False)
