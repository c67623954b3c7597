"""A campaign's pool decoded and resized once: ``cache/`` in the campaign folder.

Every query, import and ranking reads pool images at the model's size. Decoding and
resizing the original files each time costs more than the network on a large pool, so
the first time they are needed all pool images (and their manifest masks) are written
to ``cache/images.npy`` and ``cache/masks.npy`` as threads decode them, and mapped from
there afterwards (``numpy.memmap``: memory stays flat in the pool's size). The cache
records each file's size and modification time: a pool file that changed, or a cache
whose files do not match what it recorded (a truncated copy), is rebuilt, never read.
The build happens in a temporary folder that replaces ``cache/`` only when complete.
"""

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._persist import atomic_folder, resolve_folder
from .._pool import read_ahead_of
from ..datasets import DataLoadError, hash_file_stats, split_mask_field
from ._common import CampaignError
from ._pool import PoolImages

#: Format of ``cache/meta.json``.
CACHE_VERSION = 1


def fingerprint(root, images, masks, size, rgb):
    """A digest of the pool's files (names, sizes, modification times) and settings."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, list(size), bool(rgb)]).encode())
    for image, mask in zip(images, masks):
        hash_file_stats(h, root, [image] + split_mask_field(mask))
    return h.hexdigest()


def read_cache(folder, digest):
    """``(images, masks, has_mask, sizes)`` mapped from ``folder`` (``sizes``: each
    original file's width and height), or None if it is missing, of another pool or
    damaged."""
    folder = resolve_folder(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        images, masks, has_mask, sizes = _arrays(folder)
    except (OSError, ValueError, KeyError):
        return None
    n = meta.get("n")
    if (meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != digest
            or any(len(a) != n for a in (images, masks, has_mask, sizes))
            or list(images.shape) != meta.get("images_shape")):
        return None
    return images, masks, has_mask, sizes


def _arrays(folder):
    """The cache's arrays in ``folder``, images and masks mapped, the rest loaded."""
    return tuple(np.load(folder / f"{name}.npy", allow_pickle=False,
                         mmap_mode="r" if name in ("images", "masks") else None)
                 for name in ("images", "masks", "has_mask", "sizes"))


def build_cache(folder, pool, digest, n_jobs=4, progress=None, batch_size=64):
    """Decode and resize every image of ``pool`` (a :class:`PoolImages`) into ``folder``:
    ``n_jobs`` threads decode a batch while the one before is written."""
    from tqdm.auto import tqdm

    def one(i):
        try:
            return pool.read(i), pool.mask(i)
        except DataLoadError as exc:
            raise CampaignError(f"Could not read a pool image: {exc}") from None

    def decoded(executor):
        for start in range(0, n, batch_size):
            yield start, list(executor.map(one, range(start, min(n, start + batch_size))))

    n = len(pool)
    with atomic_folder(folder) as tmp, ThreadPoolExecutor(n_jobs) as executor:
        first = one(0)[0][0]
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float32,
                                           shape=(n,) + first.shape)
        masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=bool,
                                          shape=(n,) + first.shape[1:])
        has_mask, sizes = np.zeros(n, dtype=bool), np.zeros((n, 2), dtype=np.int64)
        with tqdm(total=n, desc="Caching the pool at the model's size", leave=False,
                  disable=None if progress is None else not progress) as bar:
            for start, items in read_ahead_of(decoded(executor)):
                for i, ((image, size), mask) in enumerate(items, start):
                    images[i], sizes[i] = image, size
                    if mask is not None:
                        masks[i], has_mask[i] = mask, True
                bar.update(len(items))
        images.flush()
        masks.flush()
        np.save(tmp / "has_mask.npy", has_mask)
        np.save(tmp / "sizes.npy", sizes)
        (tmp / "meta.json").write_text(json.dumps({  # last: the build is complete
            "version": CACHE_VERSION, "n": n, "fingerprint": digest,
            "images_shape": list(images.shape)}))
        del images, masks


class CachedPool(PoolImages):
    """Pool images of ``ids`` read from the campaign's cache instead of their files;
    the same items as :class:`PoolImages` (file names, manifest masks, ``None`` for an
    image without one)."""

    def __init__(self, root, images, masks, size, rgb, cache, ids, folder=None):
        super().__init__(root, images, masks, size, rgb)
        self.cache, self.ids, self.folder = cache, np.asarray(ids, dtype=int), folder

    def __getstate__(self):
        # sent to a Dask worker (scoring_dask) by the cache's folder, mapped there again,
        # not by the pixels of the whole pool
        state = dict(self.__dict__)
        if self.folder is not None:
            state["cache"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.cache is None:
            self.cache = _arrays(resolve_folder(self.folder))

    def image(self, i):
        return np.array(self.cache[0][self.ids[i]])

    def __getitems__(self, indices):
        """Items of ``indices``: one read of the mapped cache (no threads needed)."""
        rows = self.ids[np.asarray(indices, dtype=int)]
        images, masks = np.asarray(self.cache[0][rows]), np.asarray(self.cache[1][rows])
        has_mask = self.cache[2][rows]
        return [(image, mask if has else None)
                for image, mask, has in zip(images, masks, has_mask)]

    def mask(self, i):
        k = self.ids[i]
        return np.array(self.cache[1][k]) if self.cache[2][k] else None
