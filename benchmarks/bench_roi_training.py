"""ROI-guided training: accuracy, attention and cost of each ``roi_loss`` against none.

Quoted by docs/results.md and docs/lab/ (the ROI losses on a fixed labelled set).

Fits ``CNNClassifier`` on a fixed labelled set with every ROI loss and reports,
per seed and as paired differences against ``roi_loss=None``: test accuracy,
test attention (``roi_auc``, ``mass_in_roi`` of the predicted class's Grad-CAM,
with chance levels) and training time per epoch (ratios against no ROI loss).

    python benchmarks/bench_roi_training.py phantoms          # shortcut phantoms
    python benchmarks/bench_roi_training.py mri --data ../shared/data/brain-tumor-figshare

``phantoms``: the training set's corner marker agrees with the label 90 % of the
time, the test set has no marker. ``mri``: 570 random labels from the training
groups of a group split of the brain-tumour set at 64 px, tested on held-out groups.
"""

import argparse
import time

import numpy as np
import pandas as pd
import torch
from scipy import stats

from xal_sklearn import CNNClassifier, score_pool
from xal_sklearn.alignment import chance_alignment, mass_in_roi, roi_auc
from xal_sklearn.cli import whole_or_share
from xal_sklearn.datasets import (group_train_test_split, load_brain_tumor_figshare,
                                  make_lesion_phantoms)


def _data(kind, seed, args):
    if kind == "phantoms":
        train = make_lesion_phantoms(args.n_train, args.image_size, shortcut=0.9,
                                     random_state=seed)
        test = make_lesion_phantoms(args.n_test, args.image_size, shortcut=0.0,
                                    random_state=seed + 1000)
        return (train.X, train.y, train.roi_masks), (test.X, test.y, test.roi_masks)
    if args.data.endswith(".npz"):  # a copy saved by --save-npz, for a machine without ../shared
        with np.load(args.data) as f:
            data = {k: f[k] for k in f.files}
        data = type("D", (), dict(X=data["X"].astype(np.float32) / 255, y=data["y"],
                                  roi_masks=data["roi_masks"], groups=data["groups"]))
    else:
        data = load_brain_tumor_figshare(args.data, image_size=args.image_size)
    if args.save_npz:
        np.savez_compressed(args.save_npz, X=np.round(data.X * 255).astype(np.uint8), y=data.y,
                            roi_masks=data.roi_masks, groups=data.groups)
    tr, te = group_train_test_split(data.groups, 0.2, random_state=seed)
    tr = np.random.RandomState(seed).choice(tr, args.n_train, replace=False)
    return ((data.X[tr], data.y[tr], data.roi_masks[tr]),
            (data.X[te], data.y[te], data.roi_masks[te]))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("phantoms", "mri"))
    p.add_argument("--data", default="../shared/data/brain-tumor-figshare")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--losses", default="none,dice,outside,rrr")
    p.add_argument("--weights", default="1.0", help="comma-separated roi_weight values")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--csv", default=None)
    p.add_argument("--save-npz", default=None, help="mri: also save the loaded set (uint8)")
    p.add_argument("--two-branch", action="store_true",
                   help="every fit with probe_roi_settings.TwoBranchCNN (a context branch "
                        "beside the attention-taught one: 32 and 32 channels) instead of "
                        "SmallCNN (whose default branch is 16 of 64; --ctx-width 16 is it)")
    p.add_argument("--ctx-width", type=int, default=None,
                   help="with --two-branch: 48 taught channels and this many free ones "
                        "(default: 32 and 32)")
    p.add_argument("--context-channels", type=whole_or_share, default=None,
                   help="SmallCNN's context_channels (default the package's; 0: the network "
                        "the results before 2026-12-05 were measured with)")
    args = p.parse_args()
    if args.two_branch and args.context_channels is not None:
        p.error("--context-channels is SmallCNN's; --two-branch uses another network")
    module = {}
    if args.context_channels is not None:
        module["module__context_channels"] = args.context_channels
    if args.two_branch:
        from probe_roi_settings import TwoBranchCNN  # an experiment, not in the package
        module = {"module": TwoBranchCNN}
        if args.ctx_width is not None:
            module.update(module__width=48, module__ctx_width=args.ctx_width)
    phantoms = args.kind == "phantoms"
    args.epochs = args.epochs or (30 if phantoms else 20)
    args.image_size = args.image_size or (48 if phantoms else 64)
    args.n_train = args.n_train or (300 if phantoms else 570)
    configs = [("none", 0.0)] + [(loss, float(w)) for loss in args.losses.split(",")
                                 if loss != "none" for w in args.weights.split(",")]
    rows = []
    for seed in range(args.seeds):
        (X, y, M), (Xt, yt, Mt) = _data(args.kind, seed, args)
        for loss, weight in configs:
            net = CNNClassifier(n_classes=3, max_epochs=args.epochs, random_state=seed,
                                roi_loss=None if loss == "none" else loss, roi_weight=weight,
                                device=args.device, **module)
            start = time.perf_counter()
            net.fit(X, y, roi_masks=None if loss == "none" else M)
            seconds = time.perf_counter() - start
            s = score_pool(net, Xt, Mt, return_maps=True, progress=False)
            has = s.roi_available
            rows.append(dict(
                seed=seed, loss=loss, weight=weight, accuracy=float(np.mean(s.y_pred == yt)),
                roi_auc=float(np.nanmean(roi_auc(s.maps[has], Mt[has]))),
                mass_in_roi=float(np.nanmean(mass_in_roi(s.maps[has], Mt[has]))),
                chance_mass=chance_alignment(Mt[has], "mass_in_roi", s.grid_shape,
                                             random_state=seed),
                sec_per_epoch=seconds / args.epochs))
            print(pd.DataFrame(rows[-1:]).round(4).to_string(header=len(rows) == 1, index=False),
                  flush=True)
    table = pd.DataFrame(rows)
    table["config"] = table["loss"] + np.where(table["loss"] == "none", "",
                                               " w=" + table["weight"].astype(str))
    print(f"\n{args.kind}: mean over {args.seeds} seeds (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device})")
    summary = table.groupby("config", sort=False)[
        ["accuracy", "roi_auc", "mass_in_roi", "chance_mass", "sec_per_epoch"]].mean()
    base = table[table["loss"] == "none"].set_index("seed")
    summary["time_ratio"] = summary["sec_per_epoch"] / base["sec_per_epoch"].mean()
    print(summary.round(4).to_string())
    print("\nPaired differences against no ROI loss (mean [95 % bootstrap interval], "
          "min, max over seeds):")
    for config, part in table[table["loss"] != "none"].groupby("config", sort=False):
        part = part.set_index("seed")
        for metric in ("accuracy", "roi_auc", "mass_in_roi"):
            d = (part[metric] - base[metric]).to_numpy()
            ci = (stats.bootstrap((d,), np.mean, confidence_level=0.95, random_state=0)
                  .confidence_interval if len(d) > 1 else (np.nan, np.nan))
            print(f"  {config:>18} {metric:>12}: {d.mean():+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}], "
                  f"min {d.min():+.4f}, max {d.max():+.4f}")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
