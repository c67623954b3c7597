"""Active-learning settings judged inside the loop, on validation groups.

A fixed labelled set (the deleted ``probe_roi_settings.py``, see research/README.md) shows
what a training setting does to one set; in active learning each round's model also
decides which images are labelled next, and that can matter more (docs/results.md: the
fourth ROI defaults lost the ROI half's gain on the border shortcut on every seed of the
test runs, while fixed sets with as many counterexamples showed the third and fourth
defaults equal). This probe runs the loop itself without touching the test split: for each
split seed, the group split of ``xal run`` (test_size 0.2), then validation groups split
off its training part (seed + 100); the rest is the pool, the validation groups are
``run_experiment``'s ``test_set``, and the shortcut (if any) is injected into the pool at
0.9 and independently of the label on the validation groups. Every arm of one seed starts
from the same initial labelled set, so the arms pair by seed.

Arms (``--arms``, comma-separated; each is a strategy of ``xal run`` and the network's
training settings):

* ``dual-ce``, ``dual-ce0``: dual-criterion sampling (alpha 0.3), cross-entropy, the
  default network / the network without its context branch;
* ``full``: dual + the ``rank`` ROI loss at the package's defaults (the fourth: the
  16-channel context branch, weight 1);
* ``full-third``: dual + ``rank`` at the third defaults (no context branch, weight 1.5);
* ``full-ctxN``: the fourth defaults with an N-channel context branch (``full-ctx8``);
* ``random-ce``, ``random-full``: random selection, cross-entropy / the fourth defaults.

    python research/probe_loop_validation.py --mri ../shared/data/brain-tumor-figshare \
        --shortcut border --arms dual-ce,full,full-third --seeds 3 --out loop_border

prints the accuracy and ``roi_auc`` of every arm at the final budget and the paired
differences (95 % bootstrap interval over split seeds) of each arm against the first;
the results folders are resumable (``run_experiment``'s checkpoints).
"""
import argparse
from pathlib import Path

import pandas as pd
from sklearn.utils import Bunch

from xal_sklearn import CNNClassifier, dual_criterion_sampling, random_sampling
from xal_sklearn.datasets import add_shortcut, group_train_test_split, load_brain_tumor_figshare
from xal_sklearn.experiments import paired_comparison, run_experiment
from xal_sklearn.roi_loss import ROI_DEFAULTS

THIRD = dict(ROI_DEFAULTS, roi_loss="rank", roi_weight=1.5, module__context_channels=0)
FOURTH = dict(ROI_DEFAULTS, roi_loss="rank")
DUAL = (dual_criterion_sampling, {"alpha": 0.3})


def arm(name):
    """``name`` -> (query strategy, its kwargs, estimator parameters)."""
    if name == "dual-ce":
        return (*DUAL, {})
    if name == "dual-ce0":
        return (*DUAL, {"module__context_channels": 0})
    if name == "full":
        return (*DUAL, FOURTH)
    if name == "full-third":
        return (*DUAL, THIRD)
    if name.startswith("full-ctx") and name[8:].isdigit():
        return (*DUAL, dict(FOURTH, module__context_channels=int(name[8:])))
    if name == "random-ce":
        return (random_sampling, {}, {})
    if name == "random-full":
        return (random_sampling, {}, FOURTH)
    raise SystemExit(f"unknown arm {name!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mri", required=True, help="the brain-tumour figshare folder")
    p.add_argument("--shortcut", default=None, help="add_shortcut kind injected at 0.9")
    p.add_argument("--arms", default="dual-ce,full,full-third")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--budget", type=int, default=570)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out", required=True, help="folder for one results folder per seed")
    args = p.parse_args()
    arms = {name: arm(name) for name in args.arms.split(",")}
    clean = load_brain_tumor_figshare(args.mri, image_size=64)
    parts = []
    for seed in range(args.seeds):
        train, _ = group_train_test_split(clean.groups, 0.2, random_state=seed)
        pool, val = (train[i] for i in group_train_test_split(
            clean.groups[train], 0.2, random_state=seed + 100))
        data = clean
        if args.shortcut:
            data = add_shortcut(clean, args.shortcut, 0.9, test_idx=val, random_state=seed)
        take = ("X", "y", "roi_masks", "roi_available")
        pool_set = Bunch(**{k: data[k][pool] for k in take}, target_names=data.target_names)
        val_set = Bunch(**{k: data[k][val] for k in take})
        net = CNNClassifier(n_classes=3, max_epochs=args.epochs)
        table = run_experiment(net, pool_set, arms, initial_size=90, query_size=60,
                               budget=args.budget, seeds=[seed], test_set=val_set,
                               out_dir=Path(args.out) / f"split{seed}", n_jobs=args.n_jobs,
                               progress=False)
        parts.append(table)
    results = pd.concat(parts, ignore_index=True)
    final = results[results["n_labelled"] == results["n_labelled"].max()]
    print(f"validation groups, {args.shortcut or 'no'} shortcut, {args.seeds} split seeds, "
          f"{args.budget} labels")
    summary = final.groupby("strategy", sort=False).agg(
        accuracy=("accuracy", "mean"), roi_auc=("attention_roi_auc", "mean"))
    summary["per seed"] = final.groupby("strategy", sort=False)["accuracy"].apply(
        lambda s: " ".join(f"{100 * v:.1f}" for v in s))
    print(summary.round(3).to_string())
    first = next(iter(arms))
    for how in ("final", "alc"):
        diff = paired_comparison(results, reference=first, summary=how, min_seeds=5)
        print(f"\nagainst {first} ({how}):")
        print(diff[["strategy", "mean_difference", "ci_low", "ci_high"]].round(4)
              .to_string(index=False))


if __name__ == "__main__":
    main()
