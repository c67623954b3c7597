"""Benchmark what embeddings cost: score_pool with and without them, and the baselines.

Quoted by docs/benchmarks.md ("Embeddings and the baselines").

Prints, for one model and one pool (same batch size everywhere), the median time over
``--repeats`` (methods interleaved, so drift hits all alike) of

* ``predict_proba``                       -- one forward pass, the floor
* ``score_pool``                          -- probabilities + Grad-CAM + Dice, fused
* ``score_pool(embeddings=True)``         -- the same pass, penultimate features captured
* ``score_pool(embeddings="gradient")``   -- and BADGE's gradient embeddings
* ``pool_embeddings``                     -- forward only: what embedding-only strategies use
* each scikit-activeml baseline (``--labelled`` labelled images known to it)
* ``dual_criterion_sampling`` plain and with ``diversity="kcenter"`` / ``"cluster"``

and the ratios the goals are stated in (issue 18): score_pool with embeddings within 1.1x
of itself without them; strategies that need only embeddings no dearer than one
``predict_proba`` pass.

    python benchmarks/bench_embeddings.py                   # 1,024 x 1x128x128, batch 64
    python benchmarks/bench_embeddings.py --n-images 256 --image-size 64 --repeats 1
"""

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np
import torch

from xal_sklearn import (CNNClassifier, badge_sampling, bald_sampling, coreset_sampling,
                         dual_criterion_sampling, pool_embeddings, probcover_sampling,
                         score_pool, typiclust_sampling)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=1024)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--labelled", type=int, default=90)
    p.add_argument("--query-size", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.RandomState(0)
    n, size = args.n_images, args.image_size
    X = rng.rand(n, 1, size, size).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    c = rng.randint(size // 4, 3 * size // 4, (n, 2))
    M = (yy[None] - c[:, :1, None]) ** 2 + (xx[None] - c[:, 1:, None]) ** 2 < (size // 8) ** 2
    X_lab = rng.rand(args.labelled, 1, size, size).astype(np.float32)
    y_lab = np.arange(args.labelled) % 3
    # a briefly trained net with head dropout, so every strategy (BALD too) can run
    net = CNNClassifier(n_classes=3, batch_size=args.batch_size, max_epochs=1, random_state=0,
                        module__dropout=0.25).fit(X_lab, y_lab)
    lab = {"X_labeled": X_lab, "y_labeled": y_lab, "progress": False}
    k = args.query_size
    methods = {
        "predict_proba": lambda: net.predict_proba(X),
        "score_pool": lambda: score_pool(net, X, M, progress=False),
        "score_pool(embeddings=True)": lambda: score_pool(net, X, M, embeddings=True,
                                                          progress=False),
        'score_pool(embeddings="gradient")': lambda: score_pool(net, X, M,
                                                                embeddings="gradient",
                                                                progress=False),
        "pool_embeddings": lambda: pool_embeddings(net, X, progress=False),
        "coreset_sampling": lambda: coreset_sampling(net, X, k, random_state=0, **lab),
        "badge_sampling": lambda: badge_sampling(net, X, k, random_state=0, **lab),
        "typiclust_sampling": lambda: typiclust_sampling(net, X, k, random_state=0, **lab),
        "probcover_sampling": lambda: probcover_sampling(net, X, k, random_state=0, **lab),
        "bald_sampling (20 MC samples)": lambda: bald_sampling(net, X, k, random_state=0,
                                                               **lab),
        "dual_criterion_sampling": lambda: dual_criterion_sampling(
            net, X, k, roi_masks=M, random_state=0, progress=False),
        'dual, diversity="kcenter"': lambda: dual_criterion_sampling(
            net, X, k, roi_masks=M, random_state=0, diversity="kcenter", progress=False),
        'dual, diversity="cluster"': lambda: dual_criterion_sampling(
            net, X, k, roi_masks=M, random_state=0, diversity="cluster", progress=False),
    }
    warnings.simplefilter("ignore")  # ProbCover's purity note on random images
    for fn in methods.values():  # warm-up (imports scikit-activeml once)
        fn()
    times = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(t) for name, t in times.items()}

    print(f"\nEmbeddings and baselines: {n} images of 1x{size}x{size}, {args.labelled} "
          f"labelled, batches of {k} queried, prediction batch {args.batch_size}, torch "
          f"threads {torch.get_num_threads()}, repeats {args.repeats} (medians)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}")
    print(f"{'method':36s} {'median s':>9s} {'/ predict_proba':>16s} {'/ score_pool':>13s}")
    for name in methods:
        print(f"{name:36s} {med[name]:9.3f} {med[name] / med['predict_proba']:15.2f}x "
              f"{med[name] / med['score_pool']:12.2f}x")
    print("\nGoals:")
    for name in ("score_pool(embeddings=True)", 'score_pool(embeddings="gradient")'):
        print(f"  {name} / score_pool: {med[name] / med['score_pool']:.3f} (goal <= 1.1)")
    for name in ("pool_embeddings", "coreset_sampling", "badge_sampling",
                 "typiclust_sampling", "probcover_sampling", "bald_sampling (20 MC samples)"):
        print(f"  {name} / predict_proba: {med[name] / med['predict_proba']:.3f} "
              "(goal <= 1.0 for embeddings alone; the strategies add their own selection "
              "and the labelled images' pass)" if name == "pool_embeddings" else
              f"  {name} / predict_proba: {med[name] / med['predict_proba']:.3f}")


if __name__ == "__main__":
    main()
