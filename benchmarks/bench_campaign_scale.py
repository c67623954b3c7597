"""A campaign's steps on pools of synthetic files of growing size: nothing quadratic.

Quoted by docs/benchmarks.md (issue 42, part 3).

    python benchmarks/bench_campaign_scale.py --n 5000 20000 --size 24 --image-size 16

For each ``--n``: that many random PNG files (made here, not committed), then timed:
``init``; the first query (random, 20 images; builds the pool cache); importing 20
labels (training, 1 epoch); the second query (entropy over the rest of the pool); and
``open`` + ``status``. Tiny images, so that the time is the campaign's own bookkeeping
and the pool's reading rather than the network.
"""

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from xal_sklearn.campaign import Campaign


def _timed(out, what, f):
    start = time.perf_counter()
    r = f()
    out[what] = time.perf_counter() - start
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[5000, 20000])
    p.add_argument("--size", type=int, default=24, help="side of the files, pixels")
    p.add_argument("--image-size", type=int, default=16, help="side the model sees")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = {}
    for n in args.n:
        work = Path(tempfile.mkdtemp(prefix="xal-scale-"))
        root = work / "pool"
        (root / "img").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (args.size, args.size), dtype=np.uint8)).save(
                root / "img" / f"{i:06d}.png")
        t = {}
        c = _timed(t, "init", lambda: Campaign.create(
            work / "study", root, ["a", "b"], image_size=args.image_size, epochs=1,
            strategy="entropy"))
        batch = _timed(t, "query 1 (random; builds the cache)",
                       lambda: Campaign.open(c.folder).query(20))
        with open(work / "answers.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["xal_id", "image", "label"])
            w.writerows([i, c.pool["images"][i], "ab"[i % 2]] for i in batch["ids"])
        _timed(t, "import 20 labels (trains)",
               lambda: Campaign.open(c.folder).import_labels(work / "answers.csv"))
        _timed(t, "query 2 (entropy over the pool)", lambda: Campaign.open(c.folder).query(20))
        _timed(t, "open + status", lambda: Campaign.open(c.folder).status())
        rows[n] = t
        shutil.rmtree(work, ignore_errors=True)
    steps = list(next(iter(rows.values())))
    print("step".ljust(36) + "".join(f"{n:>12,d}" for n in rows) + "   (seconds)")
    for step in steps:
        print(step.ljust(36) + "".join(f"{rows[n][step]:12.2f}" for n in rows))


if __name__ == "__main__":
    main()
