"""``dual_criterion_sampling``'s ``alpha`` and ``alignment``, judged on validation groups.

With attention taught by the ROI loss (``CNNClassifier(roi_loss="rank")`` at its
defaults), the misalignment half of the score reads a Grad-CAM that means something,
so the weight between the halves has to be chosen again (issue 16, part 1). For each
seed: the seed's group split (as ``xal run``), validation groups split off its training
part (seed + 100); the rest is the pool. An active-learning run per setting (90 initial
labels, 60 a round, 570 in all, 20 epochs) is scored on the validation groups. The
test split is never read. ``--shortcut KIND`` injects ``add_shortcut(KIND, 0.9)`` into
the pool, independent of the label on the validation groups.

    python research/probe_dual_settings.py --mri ../shared/data/brain-tumor-figshare \
        [--shortcut intensity] [--alphas 0.1,0.3,0.5,0.7,1] \
        [--alignments soft_dice,roi_auc] [--seeds 3] [--out FOLDER]

prints validation accuracy at 570 labels and its ALC per setting (mean over seeds, and
each setting minus ``alpha=1``, which is entropy sampling with the same training), and
leaves each seed's results folder in ``--out``.
"""
import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xal_sklearn import CNNClassifier, dual_criterion_sampling
from xal_sklearn.alignment import ALIGNMENT_METRICS
from xal_sklearn.datasets import (add_shortcut, group_train_test_split,
                                  load_brain_tumor_figshare, subset)
from xal_sklearn.experiments import load_results, paired_comparison, run_experiment


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mri", required=True, help="the brain-tumour figshare folder")
    p.add_argument("--shortcut", default=None, help="an add_shortcut kind, at 0.9")
    p.add_argument("--alphas", default="0.1,0.3,0.5,0.7,1")
    p.add_argument("--alignments", default="soft_dice")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out", default="probe_dual")
    args = p.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    alignments = args.alignments.split(",")
    bad = [a for a in alignments if a not in ALIGNMENT_METRICS]
    if bad:
        p.error(f"unknown alignment {', '.join(bad)}; choose from {', '.join(ALIGNMENT_METRICS)}")
    data = load_brain_tumor_figshare(args.mri, image_size=64)
    strategies = {}
    for a, name in itertools.product(alphas, alignments):
        if a == 1 and name != alignments[0]:
            continue  # alpha=1 does not read the alignment
        strategies[f"a={a:g} {name}"] = (dual_criterion_sampling,
                                         {"alpha": a, "alignment": name})
    net = CNNClassifier(n_classes=3, max_epochs=20, roi_loss="rank")
    tables, start = [], time.time()
    for seed in range(args.seeds):
        train, _ = group_train_test_split(data.groups, 0.2, random_state=seed)
        pool_idx, val_idx = (train[i] for i in group_train_test_split(
            data.groups[train], 0.2, random_state=seed + 100))
        part = subset(data, np.concatenate([pool_idx, val_idx]))
        val_pos = np.arange(len(pool_idx), len(part.y))
        if args.shortcut:
            part = add_shortcut(part, args.shortcut, 0.9, test_idx=val_pos, random_state=seed)
        pool, val = subset(part, np.arange(len(pool_idx))), subset(part, val_pos)
        folder = Path(args.out) / f"seed{seed}"
        run_experiment(net, pool, strategies, seeds=(seed,), test_set=val, out_dir=folder,
                       n_jobs=args.n_jobs, progress=False)
        tables.append(load_results(folder))
    table = pd.concat(tables)
    final = table[table["n_labelled"] == table["n_labelled"].max()]
    reference = f"a=1 {alignments[0]}"
    diffs = {}
    if reference in strategies:
        for summary in ("final", "alc"):
            c = paired_comparison(table, "accuracy", reference, summary=summary, min_seeds=1)
            for _, row in c.iterrows():
                diffs[row["strategy"], summary] = (f"{row['mean_difference']:+.3f} "
                                                   f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]")
    print(f"\nshortcut={args.shortcut}, {args.seeds} seeds, {time.time() - start:.0f} s\n")
    print("| setting | accuracy at 570 (per seed) | - alpha=1 (entropy) | ALC - alpha=1 |")
    print("| --- | --- | --- | --- |")
    for name in strategies:
        acc = final[final["strategy"] == name]["accuracy"]
        print(f"| {name} | {acc.mean():.3f} ({', '.join(f'{v:.3f}' for v in acc)}) | "
              f"{diffs.get((name, 'final'), '')} | {diffs.get((name, 'alc'), '')} |")


if __name__ == "__main__":
    main()
