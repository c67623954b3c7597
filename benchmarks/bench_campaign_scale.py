"""A campaign's steps on pools of growing size: time and peak memory of each step.

Quoted by docs/benchmarks.md (issue 42, parts 3 and 4).

    python benchmarks/bench_campaign_scale.py --n 10000 100000 --size 256 --image-size 64

For each ``--n``: that many PNG files (made here in a temporary folder, not committed:
smooth random blobs with noise, ``--size`` pixels), then each step in a process of its
own, so that its peak memory is its own (``ru_maxrss``, which counts the pages of the
mapped cache a step has read, and the heap, RssAnon sampled every 10 ms): ``init``; the first
query (random, 20 images; it builds the pool cache: every file decoded and resized
once); importing 20 labels (training, 1 epoch); the second query (entropy: the network
over the whole pool, read from the cache); ``open`` + ``status``. The goal (issue 42):
memory flat in the pool's size, under 2 GB at 100,000 images.
"""

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS = ("init", "query 1 (random; builds the cache)", "import 20 labels (trains)",
         "query 2 (entropy over the pool)", "open + status")


def _make_files(root, n, size, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(0.05, 0.2) * size
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = 60 + 150 * blob + rng.normal(0, 4, (size, size))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "img" / f"{i:06d}.png")


def _step(name, work, image_size):
    from xal_sklearn.campaign import Campaign

    folder = work / "study"
    if name == STEPS[0]:
        Campaign.create(folder, work / "pool", ["a", "b"], image_size=image_size, epochs=1,
                        strategy="entropy")
    elif name in (STEPS[1], STEPS[3]):
        Campaign.open(folder).query(20, allow_repeat=True)
    elif name == STEPS[2]:
        c = Campaign.open(folder)
        ids = c.state["pending"]["1"]
        with open(work / "answers.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["xal_id", "image", "label"])
            w.writerows([i, c.pool["images"][i], "ab"[k % 2]] for k, i in enumerate(ids))
        c.import_labels(work / "answers.csv")
    else:
        Campaign.open(folder).status()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[5000, 20000])
    p.add_argument("--size", type=int, default=64, help="side of the files, pixels")
    p.add_argument("--image-size", type=int, default=32, help="side the model sees")
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:  # one step, in its own process, timed after the imports
        import threading

        import xal_sklearn.campaign  # noqa: F401
        import xal_sklearn.classifier  # noqa: F401

        anon, done = [0], [False]

        def watch():  # the heap's peak: RSS also counts the mapped cache's file pages
            while not done[0]:
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            anon[0] = max(anon[0], int(line.split()[1]))
                time.sleep(0.01)

        threading.Thread(target=watch, daemon=True).start()
        start = time.perf_counter()
        _step(args.step, Path(args.work), args.image_size)
        seconds = time.perf_counter() - start
        time.sleep(0.02)
        done[0] = True
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps({"seconds": seconds, "peak_mib": peak, "anon_mib": anon[0] / 1024}))
        return
    rows = {}
    for n in args.n:
        work = Path(tempfile.mkdtemp(prefix="xal-scale-"))
        start = time.perf_counter()
        _make_files(work / "pool", n, args.size)
        made = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in (work / "pool" / "img").iterdir()) / 2 ** 20
        print(f"{n:,d} files of {args.size} px made in {made:.0f} s ({disk:.0f} MiB)",
              flush=True)
        rows[n] = {}
        for step in STEPS:
            out = subprocess.run([sys.executable, __file__, "--step", step, "--work", str(work),
                                  "--image-size", str(args.image_size)],
                                 capture_output=True, text=True, check=True)
            rows[n][step] = json.loads(out.stdout.strip().splitlines()[-1])
            r = rows[n][step]
            print(f"  {step}: {r['seconds']:.1f} s, peak RSS {r['peak_mib']:.0f} MiB, of "
                  f"it the heap (RssAnon) {r['anon_mib']:.0f} MiB", flush=True)
        cache = sum(f.stat().st_size for f in (work / "study" / "cache").iterdir()) / 2 ** 20
        print(f"  pool cache on disk: {cache:.0f} MiB", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'step':36s}" + "".join(f"{n:>30,d}" for n in rows))
    for step in STEPS:
        print(f"{step:36s}" + "".join(
            f"{rows[n][step]['seconds']:9.1f} s {rows[n][step]['peak_mib']:6.0f} "
            f"/ {rows[n][step]['anon_mib']:5.0f} MiB" for n in rows))
    print("(seconds; peak RSS / peak heap)")


if __name__ == "__main__":
    main()
