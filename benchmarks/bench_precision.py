"""Do the fast CPU training paths give the same test accuracy as skorch's plain one?

Quoted by docs/benchmarks.md (training precision and layout).

    python benchmarks/bench_precision.py --mri ../shared/data/brain-tumor-figshare
    python benchmarks/bench_precision.py            # shortcut-free lesion phantoms

For each seed: a group split (the brain set) or a fresh phantom set, ``--n`` random
training images, and one ``CNNClassifier`` fit (15 epochs, cosine schedule, the
defaults) per variant, all with the same seed:

* ``float32 plain layout``: skorch's NCHW path (``cpu_channels_last = False``);
* ``float32``: the default CPU path (channels-last layout);
* ``bf16-mixed``: channels-last with ``precision="bf16-mixed"``.

Layout and bfloat16 change rounding, and training amplifies rounding into other
weights, so the check is statistical: the paired difference in test accuracy from
the plain path over seeds, with a bootstrap interval and a Wilcoxon p-value
(:func:`xal_sklearn.experiments.paired_comparison`). It also prints the median fit time
of each variant; the variants of one seed run back to back, so drift hits all alike.
"""

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from xal_sklearn import CNNClassifier
from xal_sklearn.datasets import group_train_test_split, make_lesion_phantoms
from xal_sklearn.experiments import paired_comparison

VARIANTS = {
    "float32 plain layout": dict(precision="float32", channels_last=False),
    "float32": dict(precision="float32", channels_last=True),
    "bf16-mixed": dict(precision="bf16-mixed", channels_last=True),
}


def _split(args, data, seed):
    rng = np.random.default_rng(seed)
    if data is None:
        train = make_lesion_phantoms(args.n, args.size, shortcut=0.0, random_state=seed)
        test = make_lesion_phantoms(600, args.size, shortcut=0.0, random_state=10_000 + seed)
        return train.X, train.y, test.X, test.y
    tr, te = group_train_test_split(data.groups, test_size=0.2, random_state=seed)
    tr = rng.choice(tr, size=min(args.n, len(tr)), replace=False)
    return data.X[tr], data.y[tr], data.X[te], data.y[te]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mri", default=None, help="brain-tumour folder (else phantoms)")
    p.add_argument("--n", type=int, default=570, help="training images per seed")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--device", default="cpu", help="cpu or cuda (layouts are CPU-only: "
                                                     "the two float32 rows then coincide)")
    args = p.parse_args()
    data = None
    if args.mri:
        from xal_sklearn.datasets import load_brain_tumor_figshare

        data = load_brain_tumor_figshare(args.mri, image_size=args.size)
    rows, times = [], {name: [] for name in VARIANTS}
    for seed in range(args.seeds):
        X, y, X_test, y_test = _split(args, data, seed)
        for name, v in VARIANTS.items():
            net = CNNClassifier(n_classes=len(np.unique(y_test)), max_epochs=args.epochs,
                                precision=v["precision"], device=args.device,
                                random_state=seed)
            net.cpu_channels_last = v["channels_last"]
            start = time.perf_counter()
            net.fit(X, y)
            times[name].append(time.perf_counter() - start)
            acc = float(np.mean(net.predict(X_test) == y_test))
            rows.append({"strategy": name, "seed": seed, "n_labelled": len(y), "accuracy": acc})
        print(f"seed {seed}: " + ", ".join(f"{r['strategy']} {r['accuracy']:.3f}"
                                           for r in rows[-len(VARIANTS):]), flush=True)
    results = pd.DataFrame(rows)
    print(f"\n{'MRI' if args.mri else 'phantoms'} {args.size} px, {args.n} training images, "
          f"{args.epochs} epochs, {args.seeds} seeds, device {args.device}")
    base = statistics.median(times["float32 plain layout"])
    for name in VARIANTS:
        accs = results.loc[results.strategy == name, "accuracy"]
        fit = statistics.median(times[name])
        print(f"{name:22} accuracy {accs.mean():.3f} +- {accs.std():.3f}   "
              f"fit {fit:6.2f} s ({base / fit:.2f}x)")
    cmp = paired_comparison(results, reference="float32 plain layout")
    print("\npaired differences in test accuracy from the plain layout (95 % bootstrap):")
    for _, r in cmp.iterrows():
        print(f"{r.strategy:22} {r.mean_difference:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
              f"  p={r.p_wilcoxon:.3f}  {r.verdict}")


if __name__ == "__main__":
    main()
