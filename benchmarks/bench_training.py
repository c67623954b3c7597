"""Training and prediction speed of CNNClassifier against plain skorch, and the ROI losses' cost.

    python benchmarks/bench_training.py [--n 576] [--size 64] [--epochs 3] [--repeats 3]
    python benchmarks/bench_training.py --mri ../shared/data/brain-tumor-figshare --n 570

Rows, all with the same batch size and optimiser, timed in one process (medians over
repeats, rows interleaved so that drift on a shared machine hits all alike):

* ``skorch``: ``skorch.NeuralNetClassifier`` with ``SmallCNN`` as it is (the baseline);
* ``skorch, 0.1 SmallCNN``: the same with the first release's SmallCNN (ReLU before
  max-pool, ``AdaptiveAvgPool2d``): the same function and parameters, what users ran;
* ``CNNClassifier``: this package's path (on the CPU, channels-last layout);
* ``CNNClassifier plain layout``: the same with ``cpu_channels_last = False``;
* ``CNNClassifier bf16-mixed``: with ``precision="bf16-mixed"``;
* ``CNNClassifier roi_loss=..., CONFLICT``: with each attention loss on every sample's
  mask, on from the first epoch (``roi_warmup=0``, so every epoch pays for it), its
  gradient added as it is (``sum``), projected off the cross-entropy's where they
  conflict (``project``: one more backward pass per step), or projected and applied
  after the optimizer's step (``separate``, the default: the same passes plus one
  elementwise update).

It prints seconds per epoch, prediction throughput, ratios to the baseline, and the
largest difference between the baseline's and each row's predicted probabilities
after identical training (same seed): layouts change rounding, not results;
bfloat16 changes results within seed noise (docs/benchmarks.md has the accuracy check).
"""

import argparse
import statistics
import time

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn

from xal_sklearn import CNNClassifier, SmallCNN
from xal_sklearn.datasets import make_lesion_phantoms


class PreviousSmallCNN(SmallCNN):
    """SmallCNN as released first: ReLU before max-pool and ``AdaptiveAvgPool2d``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        layers = list(self.features)
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
                layers[i], layers[i + 1] = layers[i + 1], layers[i]
        self.features = nn.Sequential(*layers)
        self.classifier[0] = nn.AdaptiveAvgPool2d(1)


def _once(make, X, y, masks, epochs):
    net = make()
    start = time.perf_counter()
    if masks is None:
        net.fit(X, y)
    else:
        net.fit(X, y, roi_masks=masks)
    fit = (time.perf_counter() - start) / epochs
    start = time.perf_counter()
    proba = net.predict_proba(X)
    return fit, len(X) / (time.perf_counter() - start), proba


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=576)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--losses", default="dice,outside,rrr")
    p.add_argument("--conflicts", default="sum,project,separate",
                   help="roi_conflict settings to time each loss with")
    p.add_argument("--mri", default=None, help="brain-tumour folder: time on its first n slices")
    args = p.parse_args()
    if args.mri:
        from xal_sklearn.datasets import load_brain_tumor_figshare

        data = load_brain_tumor_figshare(args.mri, image_size=args.size)
        X, y, M = data.X[:args.n], data.y[:args.n], data.roi_masks[:args.n]
    else:
        data = make_lesion_phantoms(args.n, args.size, shortcut=0.9, random_state=0)
        X, y, M = data.X, data.y, data.roi_masks
    common = dict(max_epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                  optimizer=torch.optim.Adam, criterion=torch.nn.CrossEntropyLoss,
                  train_split=None, device=args.device, iterator_train__shuffle=True, verbose=0)

    def skorch_net(module=SmallCNN):
        def make():
            torch.manual_seed(0)
            return NeuralNetClassifier(module, module__in_channels=1, module__n_classes=3,
                                       **common)
        return make

    def ours(**kw):
        def make():
            torch.manual_seed(0)
            return CNNClassifier(n_classes=3, lr_schedule=None, **common, **kw)
        return make

    def plain_layout():
        net = ours()()
        net.cpu_channels_last = False
        return net

    rows = [("skorch (baseline)", skorch_net(), None),
            ("skorch, 0.1 SmallCNN", skorch_net(PreviousSmallCNN), None),
            ("CNNClassifier", ours(), None),
            ("CNNClassifier plain layout", plain_layout, None),
            ("CNNClassifier bf16-mixed", ours(precision="bf16-mixed"), None)]
    rows += [(f"CNNClassifier roi_loss={loss}, {conflict}",
              ours(roi_loss=loss, roi_warmup=0, roi_conflict=conflict), M)
             for loss in args.losses.split(",") if loss
             for conflict in args.conflicts.split(",")]
    if "dice" in args.losses.split(","):
        rows.append(("CNNClassifier dice, sum, bf16-mixed",
                     ours(roi_loss="dice", roi_warmup=0, roi_conflict="sum",
                          precision="bf16-mixed"), M))
    print(f"{args.n} {'MRI slices' if args.mri else 'phantoms'} 1x{args.size}x{args.size}, "
          f"batch {args.batch_size}, {args.epochs} epochs, median of {args.repeats} "
          f"(rows interleaved); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"{'':40} {'s/epoch':>8} {'fit speed-up':>12} {'predict img/s':>14} "
          f"{'predict speed-up':>16} {'max |dproba|':>12}")
    # rows interleaved repeat by repeat, so drift on a shared machine hits all alike
    runs = {name: [] for name, _, _ in rows}
    for _ in range(args.repeats):
        for name, make, masks in rows:
            runs[name].append(_once(make, X, y, masks, args.epochs))
    base = None
    for name, _, _ in rows:
        fit = statistics.median(r[0] for r in runs[name])
        pred = statistics.median(r[1] for r in runs[name])
        proba = runs[name][-1][2]
        if base is None:
            base = (fit, pred, proba)
        diff = float(np.abs(proba - base[2]).max())
        print(f"{name:40} {fit:8.3f} {base[0] / fit:11.2f}x {pred:14.0f} "
              f"{pred / base[1]:15.2f}x {diff:12.1e}")

if __name__ == "__main__":
    main()
