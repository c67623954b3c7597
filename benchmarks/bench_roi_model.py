"""What the ROI model adds to an active-learning round (issue 37, part 6: at most 25 %).

One round of the full method as ``xal run`` does it at 64 px: ``teach`` 60 new labels
(the network refits on the whole labelled set, with the ROI loss), ``query`` 60 of the
pool with the dual criterion, and score the test split. Side by side, in one run:
the pool's ROIs given (no ROI model) and predicted (``roi_model=ROIPredictor(warm_start=
True)`` as ``xal run --pool-rois predicted`` has it: at ``teach`` it continues the last
round's model on the labelled ROIs, then draws the pool's at ``query``).
Prints each repeat, the medians and their ratio, in wall-clock seconds and in this
process's CPU seconds (all its threads): on a machine busy with other work the CPU time
is the steadier measure of what the round itself costs. Quoted in docs/benchmarks.md.

    python benchmarks/bench_roi_model.py                      # brain MRI from ../shared
    python benchmarks/bench_roi_model.py --labelled 90,330,510 --repeats 3
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from xal_sklearn import ActiveLearner, CNNClassifier, ROIPredictor, dual_criterion_sampling
from xal_sklearn.experiments._run import _evaluate

MRI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brain-tumor-figshare"


def _data(size):
    if MRI.is_dir():
        from xal_sklearn.datasets import load_brain_tumor_figshare

        return load_brain_tumor_figshare(MRI, image_size=size), "brain MRI"
    from xal_sklearn.datasets import make_lesion_phantoms

    return make_lesion_phantoms(3064, image_size=size, random_state=0), "phantoms (no MRI found)"


def _round(data, labelled, new, pool, test, roi_model):
    net = CNNClassifier(n_classes=3, max_epochs=20, roi_loss="rank", random_state=0)
    learner = ActiveLearner(net, dual_criterion_sampling, roi_model=roi_model, random_state=0)
    learner.fit(data.X[labelled], data.y[labelled], data.roi_masks[labelled])
    start, cpu = time.perf_counter(), time.process_time()
    learner.teach(data.X[new], data.y[new], roi_masks=data.roi_masks[new])
    given = None if roi_model is not None else data.roi_masks[pool]
    learner.query(data.X[pool], n_instances=60, roi_masks=given)
    _evaluate(learner, data.X[test], data.y[test], data.roi_masks[test], 3)
    return time.perf_counter() - start, time.process_time() - cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--labelled", default="90,330,510",
                   help="labels before the round (60 more are taught in it)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    data, what = _data(args.image_size)
    rng = np.random.RandomState(0)
    order = rng.permutation(len(data.y))
    test, rest = order[:600], order[600:]
    print(f"{what}, {args.image_size} px, {args.threads} torch threads, pool {len(rest)} "
          f"images, test {len(test)}; one round = teach 60 + query 60 + evaluate")
    print("| labelled before | repeat | given: wall s / CPU s | predicted: wall s / CPU s | "
          "ratio wall | ratio CPU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in [int(v) for v in args.labelled.split(",")]:
        labelled, new = rest[:n], rest[n:n + 60]
        pool = rest[n + 60:]
        times = {"given": [], "predicted": []}
        for r in range(args.repeats):  # interleaved, so a slow spell hits both
            times["given"].append(_round(data, labelled, new, pool, test, None))
            times["predicted"].append(_round(data, labelled, new, pool, test,
                                             ROIPredictor(warm_start=True, random_state=0)))
            (gw, gc), (pw, pc) = times["given"][-1], times["predicted"][-1]
            print(f"| {n} | {r} | {gw:.1f} / {gc:.1f} | {pw:.1f} / {pc:.1f} | {pw / gw:.2f} | "
                  f"{pc / gc:.2f} |", flush=True)
        (gw, gc), (pw, pc) = (np.median(times[k], axis=0) for k in ("given", "predicted"))
        print(f"| {n} | median | {gw:.1f} / {gc:.1f} | {pw:.1f} / {pc:.1f} | {pw / gw:.2f} | "
              f"**{pc / gc:.2f}** |", flush=True)


if __name__ == "__main__":
    main()
