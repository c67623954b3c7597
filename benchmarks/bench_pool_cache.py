"""A campaign's query with its pool cache against decoding the files at every query.

Quoted by docs/benchmarks.md (issue 42, part 1).

    python benchmarks/bench_pool_cache.py --data ../shared/data/busi --size 128

A campaign over the folder's ``labels.csv`` images (entropy sampling, so the time is the
pool's reading and the network, not the ROI model), one labelled batch of 20 imported
from ``labels.csv``'s own labels (a random batch: selection never reads them), then the
next query of 20 timed three ways, alternated ``--repeats`` times: decoding every pool
file (what campaigns did before the cache), the first query that builds ``cache/``, and
a query that maps it. Medians, and the ratio against decoding.
"""

import argparse
import csv
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from xal_sklearn.campaign import Campaign, PoolImages


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    root = Path(args.data).resolve()
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    work = Path(tempfile.mkdtemp(prefix="xal-cache-"))
    with open(work / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image"])
        w.writerows([r["image"]] for r in rows)
    c = Campaign.create(work / "study", root, sorted({r["label"] for r in rows}),
                        manifest=work / "manifest.csv", image_size=args.size, epochs=5,
                        strategy="entropy")
    batch = c.query(20)
    label = {r["image"]: r["label"] for r in rows}
    with open(work / "answers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["xal_id", "image", "label"])
        w.writerows([i, c.pool["images"][i], label[c.pool["images"][i]]] for i in batch["ids"])
    Campaign.open(c.folder).import_labels(work / "answers.csv")
    times = {"decode every file": [], "first query (builds the cache)": [],
             "query from the cache": []}
    for _ in range(args.repeats):
        for how in times:
            opened = Campaign.open(c.folder)
            if how == "decode every file":  # the campaign before the cache
                opened._dataset = lambda ids, o=opened: PoolImages(
                    o.config["pool_root"], [o.pool["images"][i] for i in ids],
                    [o.pool["masks"][i] for i in ids], o.config["image_size"])
            elif how.startswith("first"):
                shutil.rmtree(c.folder / "cache", ignore_errors=True)
            start = time.perf_counter()
            r = opened.query(20, allow_repeat=True)
            times[how].append(time.perf_counter() - start)
            shutil.rmtree(r["folder"])  # the next repeat writes the same batch again
            state = Campaign.open(c.folder)
            state._save_state(dict(state.state, pending={}, next_batch=r["batch"]),
                              state._roi_masks(), state.learner())
    base = statistics.median(times["decode every file"])
    print(f"{len(rows)} pool images at {args.size} px, query of 20 (entropy), medians of "
          f"{args.repeats}:")
    for how, t in times.items():
        print(f"  {how:32s} {statistics.median(t):6.2f} s  ({base / statistics.median(t):.1f}x "
              "the decoding query's speed)")


if __name__ == "__main__":
    main()
