"""How large the attention term's gradient is against the cross-entropy's, per tensor.

A diagnosis for issue 16, part 1 (docs/lab/results-log-2026-12.md, "Third defaults"): under Adam a term
whose gradient is larger than the cross-entropy's inflates the second-moment estimate and
so shrinks the cross-entropy's own steps, which would show as a lower *training* accuracy
at the end of a fit. For one seed's 570 random images of the validation-group split (as
the deleted ``probe_roi_settings.py``, see research/README.md), it fits ``CNNClassifier``
with the given ROI settings and records, at every step with the term on, each parameter
tensor's ``|g_term| / |g_ce|`` (the term's gradient from ``split_gradients``, as
``roi_conflict="project"`` and ``"separate"`` use it), then prints per epoch the median
over tensors of that ratio (mean over the epoch's steps), and the training and validation
accuracy against a cross-entropy-only fit.

    python research/probe_grad_ratio.py --mri ../shared/data/brain-tumor-figshare \
        [--seed 0] [--roi-weight 3] [--roi-conflict project]

The gradients are taken in ``get_loss`` (skorch's hook) with ``torch.autograd.grad``,
which does not change what the fit does.
"""
import argparse
from collections import defaultdict

import numpy as np
import torch

from xal_sklearn import CNNClassifier
from xal_sklearn.datasets import group_train_test_split, load_brain_tumor_figshare
from xal_sklearn.roi_loss import ROI_CONFLICTS, ROI_DEFAULTS, split_gradients


class Recorder(CNNClassifier):
    """Records the per-tensor gradient ratio of every training step with the term on."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        total = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and isinstance(X, dict) and "activations" in X:
            ce = super(CNNClassifier, self).get_loss(y_pred, y_true)
            params = [p for p in self.module_.parameters() if p.requires_grad]
            g_ce, g_term = split_gradients(params, ce, total, retain_graph=True)
            ratios = [float(t.norm() / a.norm().clamp_min(1e-12))
                      for a, t in zip(g_ce, g_term)]
            # skorch adds the epoch's history row when the epoch begins
            self.ratios_.setdefault(len(self.history), []).append(ratios)
        return total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mri", required=True, help="the brain-tumour figshare folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--roi-weight", type=float, default=3.0)
    p.add_argument("--roi-conflict", default="project", choices=ROI_CONFLICTS)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_brain_tumor_figshare(args.mri, image_size=64)
    train, _ = group_train_test_split(data.groups, 0.2, random_state=args.seed)
    fit_part, val = (train[i] for i in group_train_test_split(
        data.groups[train], 0.2, random_state=args.seed + 100))
    idx = np.random.RandomState(args.seed).choice(fit_part, 570, replace=False)
    settings = dict(ROI_DEFAULTS, roi_weight=args.roi_weight, roi_conflict=args.roi_conflict)
    net = Recorder(n_classes=3, max_epochs=20, random_state=args.seed, roi_loss="rank",
                   **settings)
    net.ratios_ = {}
    net.fit(data.X[idx], data.y[idx], roi_masks=data.roi_masks[idx])
    names = [n for n, q in net.module_.named_parameters() if q.requires_grad]
    print(f"rank, {settings}; seed {args.seed}; |g_term| / |g_ce| per tensor")
    per_tensor = defaultdict(list)
    for epoch, steps in sorted(net.ratios_.items()):
        mean = np.mean(steps, axis=0)
        for name, r in zip(names, mean):
            per_tensor[name].append(r)
        print(f"  epoch {epoch:2d}: median {np.median(mean):.2f} "
              f"(range {mean.min():.2f}-{mean.max():.2f})")
    print("  per tensor, mean over those epochs: " + ", ".join(
        f"{n} {np.mean(v):.2f}" for n, v in per_tensor.items()))
    plain = CNNClassifier(n_classes=3, max_epochs=20, random_state=args.seed)
    plain.fit(data.X[idx], data.y[idx])
    for label, model in (("cross-entropy", plain), ("with the term", net)):
        acc = [float(np.mean(model.predict(data.X[i]) == data.y[i])) for i in (idx, val)]
        print(f"  {label:>13}: training accuracy {acc[0]:.3f}, validation {acc[1]:.3f}")


if __name__ == "__main__":
    main()
