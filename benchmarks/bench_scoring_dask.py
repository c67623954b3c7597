"""Pool scoring on a Dask LocalCluster: two single-threaded workers against one.

Quoted by docs/benchmarks.md (issue 42, part 2).

    python benchmarks/bench_scoring_dask.py --n 2000 --size 64

A fitted SmallCNN scores a memory-mapped pool of synthetic phantoms (``--n`` images,
with ROI masks, Grad-CAM and the dual criterion) three ways, alternated ``--repeats``
times: locally, on a LocalCluster of one single-threaded worker, and on one of two.
Medians, the ratio of two workers against one, and whether each cluster's Bunch equals
the local one bit for bit. The clusters start before the timing (a cluster is a
service people already run).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import distributed

    from xal_sklearn import CNNClassifier, score_pool
    from xal_sklearn.datasets import make_lesion_phantoms

    d = make_lesion_phantoms(args.n, args.size, shortcut=0.0, random_state=0)
    net = CNNClassifier(n_classes=3, max_epochs=2, batch_size=64, random_state=0)
    net.fit(d.X[:200], d.y[:200])
    work = Path(tempfile.mkdtemp(prefix="xal-dask-"))
    np.save(work / "X.npy", d.X)
    np.save(work / "M.npy", d.roi_masks)
    X, M = np.load(work / "X.npy", mmap_mode="r"), np.load(work / "M.npy", mmap_mode="r")
    local = score_pool(net, X, M)
    times = {"local": [], "1 worker": [], "2 workers": []}
    clusters = {k: distributed.LocalCluster(n_workers=int(k[0]), threads_per_worker=1,
                                            processes=True, dashboard_address=None)
                for k in ("1 worker", "2 workers")}
    clients = {k: distributed.Client(c) for k, c in clusters.items()}
    same = {}
    try:
        for _ in range(args.repeats):
            for how in times:
                start = time.perf_counter()
                res = score_pool(net, X, M, client=clients.get(how))
                times[how].append(time.perf_counter() - start)
                if how in clients:
                    same[how] = all(np.array_equal(res[k], local[k], equal_nan=True)
                                    for k in local if k != "grid_shape")
    finally:
        for c in list(clients.values()) + list(clusters.values()):
            c.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.n} images at {args.size} px, memory-mapped, medians of {args.repeats}:")
    for how, t in med.items():
        extra = f", same Bunch as local: {same[how]}" if how in same else ""
        print(f"  {how:10s} {t:6.2f} s ({args.n / t:.0f} images/s){extra}")
    print(f"two workers against one: {med['1 worker'] / med['2 workers']:.2f}x")


if __name__ == "__main__":
    main()
