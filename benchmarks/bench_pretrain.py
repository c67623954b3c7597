"""What self-supervised pretraining costs, and whether its features are real.

Quoted by docs/benchmarks.md ("Self-supervised pretraining").

On one seed's split (groups, 20 % test) of the brain-MRI set (or phantoms), pretrains
SmallCNN on the training split's images (no labels) and prints

* the wall time, seconds per epoch and the time the default epochs would take;
* a linear probe (logistic regression on standardised frozen features) trained on
  ``--labels`` random training images and scored on the test split, for the
  pretrained features and for random-initialised ones (``--random-seeds`` of them).

    python benchmarks/bench_pretrain.py --mri ../shared/data/brain-tumor-figshare --epochs 100
    python benchmarks/bench_pretrain.py --epochs 5                        # phantoms
    python benchmarks/bench_pretrain.py --mri ../shared/data/brain-tumor-figshare \
        --epochs 0 --memory-repeats 3
    python benchmarks/bench_pretrain.py --mri PATH --epochs 50 --device cuda   # a GPU

``--memory-repeats K`` first times ``--memory-epochs`` epochs K times each way, side by
side: with the heap reuse that ``pretrain_encoder`` switches on during CPU training
(``xal_sklearn._memory.reuse_freed_memory``) and without it (the C library's default),
and prints the medians, their ratio and the page faults. ``--epochs 0`` skips the
long run and the linear probe.
"""

import argparse
import contextlib
import resource
import time
from unittest import mock

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from xal_sklearn import SmallCNN, pretrain_encoder
from xal_sklearn.datasets import (group_train_test_split, load_brain_tumor_figshare,
                                  make_lesion_phantoms)
from xal_sklearn.pretrain import DEFAULT_PRETRAIN_EPOCHS, encoder_features


def features(weights, X, seed):
    torch.manual_seed(seed)
    module = SmallCNN(in_channels=X.shape[1])
    if weights is not None:
        weights.load_into(module)
    module.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(X), 256):
            out.append(encoder_features(module, torch.from_numpy(np.ascontiguousarray(X[i:i + 256]))))
    return torch.cat(out).numpy()


def probe(F_train, y_train, F_test, y_test):
    mu, sd = F_train.mean(0), F_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=5000).fit((F_train - mu) / sd, y_train)
    return clf.score((F_test - mu) / sd, y_test)


def compare_memory(X, args):
    """Median seconds per epoch with and without heap reuse, alternated."""
    times = {"glibc default": [], "heap reuse": []}
    faults = {k: [] for k in times}
    for _ in range(args.memory_repeats):
        for name in times:
            patch = (mock.patch("xal_sklearn.pretrain.reuse_freed_memory",
                                contextlib.nullcontext) if name == "glibc default"
                     else contextlib.nullcontext())
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            with patch:
                pretrain_encoder(X, method=args.method, epochs=args.memory_epochs,
                                 batch_size=args.batch_size, random_state=args.seed,
                                 device="cpu", progress=False)
            times[name].append((time.perf_counter() - start) / args.memory_epochs)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    for name in times:
        print(f"{name:>14}: median {np.median(times[name]):.2f} s/epoch (runs: "
              + ", ".join(f"{t:.2f}" for t in times[name])
              + f"), median {np.median(faults[name]) / args.memory_epochs:,.0f} page faults/epoch")
    ratio = np.median(times["glibc default"]) / np.median(times["heap reuse"])
    print(f"heap reuse is {ratio:.2f}x as fast ({args.method}, {len(X)} images of "
          f"{'x'.join(map(str, X.shape[1:]))}, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mri", help="brain-tumor-figshare folder (default: phantoms)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--method", default="simclr")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--labels", type=int, default=570)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-seeds", type=int, default=3)
    p.add_argument("--memory-repeats", type=int, default=0)
    p.add_argument("--memory-epochs", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where the long run pretrains (the memory comparison is CPU-only)")
    args = p.parse_args(argv)

    if args.mri:
        data = load_brain_tumor_figshare(args.mri, image_size=args.image_size)
    else:
        data = make_lesion_phantoms(1200, args.image_size, noise=0.15, random_state=0)
    train, test = group_train_test_split(data.groups, 0.2, random_state=args.seed)
    X, y = np.asarray(data.X), np.asarray(data.y)
    if args.memory_repeats:
        compare_memory(X[train], args)
    if args.epochs == 0:
        return
    start = time.monotonic()
    weights = pretrain_encoder(X[train], method=args.method, epochs=args.epochs,
                               batch_size=args.batch_size, random_state=args.seed,
                               device=args.device, progress=False)
    seconds = time.monotonic() - start
    print(f"{args.method} on {weights.info['device']}: {args.epochs} epochs on {len(train)} "
          f"images of {'x'.join(map(str, X.shape[1:]))}, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}: {seconds:.0f} s ({seconds / args.epochs:.2f} s/epoch; "
          f"the default {DEFAULT_PRETRAIN_EPOCHS} epochs would take "
          f"{DEFAULT_PRETRAIN_EPOCHS * seconds / args.epochs / 60:.1f} min); final loss "
          f"{weights.info['final_loss']:.3f}")
    labelled = np.random.RandomState(args.seed).choice(train, min(args.labels, len(train)),
                                                        replace=False)
    F = features(weights, X, 1)
    ours = probe(F[labelled], y[labelled], F[test], y[test])
    rand = []
    for s in range(args.random_seeds):
        R = features(None, X, s)
        rand.append(probe(R[labelled], y[labelled], R[test], y[test]))
    print(f"linear probe, {len(labelled)} labels, test split of {len(test)}: pretrained "
          f"{ours:.3f}; random features {np.mean(rand):.3f} (seeds: "
          + ", ".join(f"{r:.3f}" for r in rand) + ")")


if __name__ == "__main__":
    main()
