"""Which ``resize`` mode and ``class_weight`` should be the defaults? Judged on validation groups.

Breast ultrasound's images have many aspect ratios (``load_image_folder(resize=)``) and
its classes are 56 / 27 / 17 %; brain MRI's are square, its classes 47 / 23 / 30 %
(``CNNClassifier(class_weight=)``). For each seed: the seed's group split (as ``xal
run``), validation groups split off its training part (seed + 100); ``--labels`` random
images of the rest train a ``CNNClassifier`` (20 epochs, 64 px) per setting, scored on the
validation groups: accuracy, balanced accuracy, and the Grad-CAM's ``roi_auc`` against the
masks. The test split is never read. Each setting against the current defaults
(``stretch``, no class weights), paired by seed.

    python research/probe_resize_class_weight.py --busi ../shared/data/busi \
        --mri ../shared/data/brain-tumor-figshare [--seeds 5] [--out probe_resize_cw.jsonl]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import balanced_accuracy_score

from xal_sklearn import CNNClassifier, score_pool
from xal_sklearn.datasets import (group_train_test_split, load_brain_tumor_figshare,
                                  load_image_folder)


def _fit_score(data, train, val, class_weight, seed):
    net = CNNClassifier(n_classes=len(data.target_names), max_epochs=20, random_state=seed,
                        class_weight=class_weight)
    net.fit(data.X[train], data.y[train])
    s = score_pool(net, data.X[val], data.roi_masks[val], alignment="roi_auc",
                   progress=False)
    y = data.y[val]
    return {"accuracy": float(np.mean(s.y_pred == y)),
            "balanced_accuracy": float(balanced_accuracy_score(y, s.y_pred)),
            "roi_auc": float(np.nanmean(s.alignment))}


def _runs(name, loader, settings, seeds, labels, out):
    rows = []
    for resize in dict.fromkeys(r for r, _ in settings):
        data = loader(resize)
        for seed in seeds:
            train, _ = group_train_test_split(data.groups, 0.2, random_state=seed)
            pool, val = (train[i] for i in group_train_test_split(
                data.groups[train], 0.2, random_state=seed + 100))
            chosen = np.random.RandomState(seed).choice(pool, min(labels, len(pool)),
                                                         replace=False)
            for r, cw in settings:
                if r != resize:
                    continue
                start = time.time()
                row = dict(data=name, resize=r, class_weight=str(cw), seed=seed,
                           **_fit_score(data, chosen, val, cw, seed),
                           seconds=round(time.time() - start, 1))
                rows.append(row)
                with open(out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(row, flush=True)
    return pd.DataFrame(rows)


def _table(frame):
    frame = frame.assign(setting=frame.resize + " / " + frame.class_weight)
    base = frame[(frame.resize == "stretch") & (frame.class_weight == "None")]
    lines = ["| data | setting | accuracy | - default | balanced accuracy | - default | "
             "roi_auc |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (data, setting), g in frame.groupby(["data", "setting"], sort=False):
        b = base[base.data == data].set_index("seed")
        g = g.set_index("seed")
        cells = []
        for metric in ("accuracy", "balanced_accuracy"):
            d = (g[metric] - b[metric]).dropna().to_numpy()
            if len(d) >= 2 and np.ptp(d) > 0:
                ci = stats.bootstrap((d,), np.mean, n_resamples=10000, method="percentile",
                                     random_state=0).confidence_interval
                cells += [f"{g[metric].mean():.3f}",
                          f"{100 * d.mean():+.1f} [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]"]
            else:
                cells += [f"{g[metric].mean():.3f}", ""]
        lines.append(f"| {data} | {setting} | " + " | ".join(cells)
                     + f" | {g['roi_auc'].mean():.3f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busi", required=True)
    p.add_argument("--mri", required=True)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--busi-labels", type=int, default=300)
    p.add_argument("--mri-labels", type=int, default=570)
    p.add_argument("--out", default="probe_resize_cw.jsonl")
    args = p.parse_args()
    Path(args.out).unlink(missing_ok=True)
    seeds = range(args.seeds)
    busi = _runs("BUSI", lambda r: load_image_folder(args.busi, image_size=64, resize=r),
                 [(r, cw) for r in ("stretch", "pad", "crop") for cw in (None, "balanced")],
                 seeds, args.busi_labels, args.out)
    mri = _runs("MRI", lambda r: load_brain_tumor_figshare(args.mri, image_size=64),
                [("stretch", None), ("stretch", "balanced")], seeds, args.mri_labels, args.out)
    print()
    print(_table(pd.concat([busi, mri], ignore_index=True)))


if __name__ == "__main__":
    main()
