"""Scoring a pool from its files and from the pool cache, against the network on arrays.

Quoted by docs/benchmarks.md (issue 42, part 4).

    python benchmarks/bench_pool_files.py --n 10000 --size 256 --image-size 64

``--n`` PNG files of ``--size`` pixels (made here in a temporary folder by
``bench_campaign_scale``'s maker, not committed), a SmallCNN at ``--image-size``
(trained one epoch: scoring's speed does not depend on the weights), entropy scoring
(``score_pool``) timed five ways, medians of ``--repeats``:

* **arrays**: the pool decoded beforehand into one in-memory array; the network's own
  throughput, the reference (and the same read ahead by a thread, ``read_ahead=True``);
* **decoding alone**: every file read and resized (``PoolImages``' batched fetch, its
  threads), nothing scored;
* **files**: ``score_pool`` on ``PoolImages``, a batch's files decoded in threads, read
  in turn with the network (``read_ahead=False``, the CPU's default) and pipelined
  (``read_ahead=True``: one batch decoded while the network scores the last, the
  default on an accelerator); the goal is that whichever of decoding and the network
  is slower sets the pace, so the times are compared with decoding + arrays (one
  after the other) and with the slower of the two;
* **cache build**: the campaign's first pass, every file decoded into ``cache/``;
* **from the cache**: ``score_pool`` on the mapped cache (``CachedPool``); goal: at
  least 0.8x the arrays' throughput.
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_campaign_scale import _make_files

from xal_sklearn import CNNClassifier, score_pool
from xal_sklearn.campaign import PoolImages
from xal_sklearn.campaign._cache import CachedPool, build_cache, fingerprint, read_cache


def _timed(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--size", type=int, default=256, help="side of the files, pixels")
    p.add_argument("--image-size", type=int, default=64, help="side the model sees")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xal-files-"))
    try:
        _make_files(work / "pool", args.n, args.size)
        names = sorted(f"img/{f.name}" for f in (work / "pool" / "img").iterdir())
        size = (args.image_size, args.image_size)
        files = PoolImages(work / "pool", names, [""] * len(names), size)
        batches = [list(range(i, min(i + args.batch_size, len(names))))
                   for i in range(0, len(names), args.batch_size)]
        X = np.stack([item[0] for b in batches for item in files.__getitems__(b)])
        clf = CNNClassifier(classes=[0, 1], max_epochs=1, batch_size=args.batch_size,
                            random_state=0).fit(X[:64], np.arange(64) % 2)
        digest = fingerprint(work / "pool", names, [""] * len(names), size, False)

        def build():
            shutil.rmtree(work / "cache", ignore_errors=True)
            build_cache(work / "cache", files, digest, progress=False)

        def cached():
            cache = read_cache(work / "cache", digest)
            return CachedPool(work / "pool", names, [""] * len(names), size, False, cache,
                              np.arange(len(names)), work / "cache")

        ways = {
            "arrays (the network alone)": lambda: score_pool(clf, X, progress=False),
            "arrays, read ahead": lambda: score_pool(clf, X, read_ahead=True, progress=False),
            "decoding alone": lambda: [files.__getitems__(b) for b in batches],
            "files, in turn": lambda: score_pool(clf, files, read_ahead=False, progress=False),
            "files, pipelined": lambda: score_pool(clf, files, read_ahead=True, progress=False),
            "cache build (first pass)": build,
            "from the cache": lambda: score_pool(clf, cached(), progress=False),
        }
        times = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, func in ways.items():
                times[way].append(_timed(func))
        med = {way: statistics.median(t) for way, t in times.items()}
        print(f"{args.n:,d} files of {args.size} px, the model at {args.image_size} px, "
              f"medians of {args.repeats}:")
        for way, t in med.items():
            print(f"  {way:28s} {t:7.1f} s  {args.n / t:7.0f} images/s")
        arrays, decode = med["arrays (the network alone)"], med["decoding alone"]
        print(f"from the cache: {arrays / med['from the cache']:.2f}x the arrays' throughput "
              "(goal >= 0.8)")
        for way in ("files, in turn", "files, pipelined"):
            t = med[way]
            print(f"{way}: {t:.1f} s against {decode + arrays:.1f} s for decoding then the "
                  f"arrays ({(decode + arrays) / t:.2f}x) and {max(decode, arrays):.1f} s for "
                  f"the slower alone ({max(decode, arrays) / t:.2f}x)")
        print(f"cache build: {med['cache build (first pass)'] / decode:.2f}x decoding alone")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
