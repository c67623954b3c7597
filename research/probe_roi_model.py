"""Which ROIPredictor settings (threshold, epochs) draw the experts' ROIs best, and at what cost?

Chosen on validation groups only: per data set, seed 0's group split (as ``xal run``
makes it) keeps its training part; validation groups are split off that (seed 100),
the ROI model trains on a random labelled subset of the rest (as many ROIs as an
active-learning run holds at 90, 330 and 570 labels) and is scored on the validation
groups. The test split is never read.

    python research/probe_roi_model.py --data brain-tumor-figshare:../shared/data/brain-tumor-figshare
    python research/probe_roi_model.py --data folder:../shared/data/busi
"""

import argparse
import time

import numpy as np

from xal_sklearn.cli import _load_data
from xal_sklearn.datasets import group_train_test_split
from xal_sklearn.roi_model import ROIPredictor, roi_model_quality


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--sizes", default="90,330,570")
    p.add_argument("--epochs", default="15,30")
    p.add_argument("--thresholds", default="0.2,0.3,0.4,0.5")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--filters", default="16x32", help="n_filters settings, e.g. 16x32,8x16")
    p.add_argument("--max-steps", default="none", help="max_steps settings, e.g. none,100")
    p.add_argument("--loop", action="store_true",
                   help="instead: grow the labelled set by 60 a round from the first size "
                        "to the last and compare refitting from scratch (max_steps) with "
                        "continuing last round's model (warm_start, warm_epochs)")
    p.add_argument("--warm-epochs", type=int, default=2)
    args = p.parse_args()
    data, _, description = _load_data(args.data, args.image_size, 0, 0)
    train, _ = group_train_test_split(data.groups, 0.2, random_state=0)
    groups = np.asarray(data.groups)[train]
    fit_part, val_part = group_train_test_split(groups, 0.2, random_state=100)
    fit_idx, val_idx = train[fit_part], train[val_part]
    avail = np.asarray(data.roi_available)
    val_masks = [m if a else None for m, a in zip(data.roi_masks[val_idx], avail[val_idx])]
    print(f"{description}: {len(fit_idx)} images to train on, {len(val_idx)} validation "
          "images", flush=True)
    if args.loop:
        return loop(args, data, fit_idx, val_idx, val_masks, avail)
    print("| labelled | filters | max_steps | epochs | seed | fit s | roi_auc | "
          + " | ".join(f"Dice @{t}" for t in args.thresholds.split(",")) + " | empty ok |")
    for n in [int(s) for s in args.sizes.split(",")]:
        for epochs, filters, steps in [(int(e), f, m) for e in args.epochs.split(",")
                                       for f in args.filters.split(",")
                                       for m in args.max_steps.split(",")]:
            n_filters = tuple(int(v) for v in filters.split("x"))
            max_steps = None if steps == "none" else int(steps)
            for seed in range(args.seeds):
                chosen = np.random.RandomState(seed).choice(fit_idx, n, replace=False)
                masks = [m if a else None for m, a in zip(data.roi_masks[chosen], avail[chosen])]
                start = time.monotonic()
                model = ROIPredictor(max_epochs=epochs, n_filters=n_filters, max_steps=max_steps,
                                     random_state=seed).fit(data.X[chosen], masks)
                seconds = time.monotonic() - start
                cells = []
                for t in args.thresholds.split(","):
                    model.set_params(threshold=float(t))
                    q = roi_model_quality(model, data.X[val_idx], val_masks)
                    cells.append(f"{q.dice:.3f}")
                print(f"| {n} | {filters} | {steps} | {epochs} | {seed} | {seconds:.1f} | "
                      f"{q.roi_auc:.3f} | "
                      + " | ".join(cells) + f" | {q.empty_correct:.2f} |", flush=True)


def loop(args, data, fit_idx, val_idx, val_masks, avail):
    sizes = [int(s) for s in args.sizes.split(",")]
    threshold = float(args.thresholds.split(",")[0])
    print(f"| seed | labelled | scratch fit s | scratch Dice @{threshold} | warm fit s | "
          f"warm Dice @{threshold} | scratch roi_auc | warm roi_auc |")
    for seed in range(args.seeds):
        order = np.random.RandomState(seed).permutation(fit_idx)
        warm = ROIPredictor(warm_start=True, warm_epochs=args.warm_epochs, threshold=threshold,
                            random_state=seed)
        for n in range(sizes[0], sizes[-1] + 1, 60):
            chosen = order[:n]
            masks = [m if a else None for m, a in zip(data.roi_masks[chosen], avail[chosen])]
            start = time.monotonic()
            cold = ROIPredictor(threshold=threshold, random_state=seed).fit(data.X[chosen], masks)
            t_cold = time.monotonic() - start
            start = time.monotonic()
            warm.fit(data.X[chosen], masks)
            t_warm = time.monotonic() - start
            qc = roi_model_quality(cold, data.X[val_idx], val_masks)
            qw = roi_model_quality(warm, data.X[val_idx], val_masks)
            print(f"| {seed} | {n} | {t_cold:.1f} | {qc.dice:.3f} | {t_warm:.1f} | {qw.dice:.3f} "
                  f"| {qc.roi_auc:.3f} | {qw.roi_auc:.3f} |", flush=True)


if __name__ == "__main__":
    main()
