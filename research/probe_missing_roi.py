"""How should the dual criterion score pool images without an ROI? Judged on validation groups.

Breast ultrasound's normal images carry an empty mask: their attention cannot be judged,
so ``score_pool``'s ``missing_roi`` decides where they rank (issue 39, item 1). For each
seed: the seed's group split (as ``xal run``), validation groups split off its training
part (seed + 100); the rest is the pool. Every arm trains with the ROI loss at its
defaults (``roi_loss="rank"``) and differs only in selection: entropy sampling, and the
dual criterion (alpha 0.3) with each ``missing_roi`` policy. The test split is never read.

    python research/probe_missing_roi.py --busi ../shared/data/busi \
        [--policies typical,matched,uncertainty] [--seeds 5] [--out probe_missing_roi]

prints, per arm, validation accuracy and balanced accuracy at the final budget, their
differences from ``typical`` paired by seed, and the share of normal images among the
queried ones (the pool's share beside it); each seed's results folder stays in ``--out``.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xal_sklearn import CNNClassifier, dual_criterion_sampling, uncertainty_sampling
from xal_sklearn.datasets import group_train_test_split, load_image_folder, subset
from xal_sklearn.experiments import load_results, paired_comparison, run_experiment
from xal_sklearn.scoring import MISSING_ROI_POLICIES


def _normal_share(results, y, normal):
    """Share of normal images among each run's queried images (not the initial set)."""
    rows = []
    for (name, seed), g in results.groupby(["strategy", "seed"], sort=False):
        queried = [i for q in g.sort_values("round")["queried"] for i in json.loads(q)]
        rows.append({"strategy": name, "seed": seed,
                     "normal_share": float(np.mean(y[queried] == normal))})
    return pd.DataFrame(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busi", required=True, help="the BUSI folder (labels.csv, images, masks)")
    p.add_argument("--policies", default="typical,matched,uncertainty")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--initial", type=int, default=60)
    p.add_argument("--query-size", type=int, default=30)
    p.add_argument("--budget", type=int, default=240)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out", default="probe_missing_roi")
    args = p.parse_args()
    policies = args.policies.split(",")
    bad = [m for m in policies if m not in MISSING_ROI_POLICIES]
    if bad:
        p.error(f"unknown policy {', '.join(bad)}; choose from {', '.join(MISSING_ROI_POLICIES)}")
    data = load_image_folder(args.busi, image_size=64)
    normal = list(data.target_names).index("normal")
    strategies = {"entropy": (uncertainty_sampling, {})}
    for m in policies:
        strategies[f"dual {m}"] = (dual_criterion_sampling, {"alpha": 0.3, "missing_roi": m})
    net = CNNClassifier(n_classes=len(data.target_names), max_epochs=20, roi_loss="rank")
    tables, shares, start = [], [], time.time()
    for seed in range(args.seeds):
        train, _ = group_train_test_split(data.groups, 0.2, random_state=seed)
        pool_idx, val_idx = (train[i] for i in group_train_test_split(
            data.groups[train], 0.2, random_state=seed + 100))
        pool, val = subset(data, pool_idx), subset(data, val_idx)
        folder = Path(args.out) / f"seed{seed}"
        run_experiment(net, pool, strategies, initial_size=args.initial,
                       query_size=args.query_size, budget=args.budget, seeds=(seed,),
                       test_set=val, out_dir=folder, n_jobs=args.n_jobs, progress=False)
        r = load_results(folder)
        tables.append(r)
        shares.append(_normal_share(r, np.asarray(pool.y), normal))
        pool_share = float(np.mean(np.asarray(pool.y) == normal))
        print(f"seed {seed} done at {time.time() - start:.0f} s; normals are "
              f"{pool_share:.0%} of its pool", flush=True)
    table, share = pd.concat(tables), pd.concat(shares)
    final = table[table["n_labelled"] == table["n_labelled"].max()]
    diffs = {}
    reference = f"dual {policies[0]}"
    for metric in ("accuracy", "balanced_accuracy"):
        c = paired_comparison(table, metric, reference, summary="final", min_seeds=1)
        for _, row in c.iterrows():
            diffs[row["strategy"], metric] = (f"{row['mean_difference']:+.3f} "
                                              f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]")
    print(f"\n{args.seeds} seeds, {args.budget} labels, {time.time() - start:.0f} s\n")
    print(f"| arm | val accuracy | - {reference} | val balanced accuracy | - {reference} | "
          "normals among queries (per seed) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in strategies:
        f = final[final["strategy"] == name]
        s = share[share["strategy"] == name]["normal_share"]
        print(f"| {name} | {f['accuracy'].mean():.3f} | {diffs.get((name, 'accuracy'), '')} | "
              f"{f['balanced_accuracy'].mean():.3f} | "
              f"{diffs.get((name, 'balanced_accuracy'), '')} | {s.mean():.2f} "
              f"({', '.join(f'{v:.2f}' for v in s)}) |")


if __name__ == "__main__":
    main()
