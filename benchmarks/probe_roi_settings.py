"""ROI-loss settings on the real brain MRI, judged on validation groups (issue 16, part 1).

For each setting and seed: the seed's group split (as ``xal run``), then validation
groups split off the training part (seed + 100); 570 random images of the rest train a
``CNNClassifier`` (20 epochs); accuracy and Grad-CAM ``roi_auc`` are measured on the
validation groups. The test split is never read. ``Normalised`` (not in the package; an
experiment) rescales the attention term at every step to ``roi_weight`` x the
cross-entropy's size, the scaling of the explanatory-interactive-learning typology code.

    python benchmarks/probe_roi_settings.py --mri ../shared/data/brain-tumor-figshare \
        [--configs ce,dice0.1,...] [--seeds 3]

prints one JSON line per setting (per-seed values and means). Results: docs/results.md.
"""
import argparse
import json
import time

import numpy as np
import torch

from xal_sklearn import CNNClassifier, score_pool
from xal_sklearn.alignment import alignment_t
from xal_sklearn.datasets import group_train_test_split, load_brain_tumor_figshare
from xal_sklearn.roi_loss import roi_loss_term


class Normalised(CNNClassifier):
    """Attention term rescaled each step to roi_weight x the cross-entropy's size."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        ce = super(CNNClassifier, self).get_loss(y_pred, y_true, X=X, training=training)
        if not (training and isinstance(X, dict) and "activations" in X):
            return ce
        term = roi_loss_term(self.roi_loss, x=X["x"], logits=y_pred,
                             activations=X["activations"], target=y_true.long(),
                             masks=X["roi"], has_roi=X["has_roi"], dilation=self.roi_dilation)
        scale = ce.detach() / term.detach().clamp_min(1e-6)
        return ce + float(self.roi_weight) * scale * term


N, O = "dice", "outside"
CONFIGS = {  # name -> CNNClassifier parameters (cls: the estimator class)
    "ce": dict(),
    "dice0.1": dict(roi_loss=N, roi_weight=0.1),
    "norm-dice1": dict(cls=Normalised, roi_loss=N, roi_weight=1.0),
    "norm-outside1": dict(cls=Normalised, roi_loss=O, roi_weight=1.0),
    "norm-dice1-L4": dict(cls=Normalised, roi_loss=N, roi_weight=1.0,
                          gradcam_layer="features.4"),
    "norm-outside1-dil2": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=2),
    "norm-outside0.3-dil2": dict(cls=Normalised, roi_loss=O, roi_weight=0.3, roi_dilation=2),
    "norm-outside3-dil2": dict(cls=Normalised, roi_loss=O, roi_weight=3.0, roi_dilation=2),
    "norm-dice1-dil2": dict(cls=Normalised, roi_loss=N, roi_weight=1.0, roi_dilation=2),
    "norm-outside1-dil2-warm5": dict(cls=Normalised, roi_loss=O, roi_weight=1.0,
                                     roi_dilation=2, roi_warmup=5),
    "outside3-dil2": dict(roi_loss=O, roi_weight=3.0, roi_dilation=2),
    "norm-outside1-dil4-L4": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=4,
                                  gradcam_layer="features.4"),
    "norm-outside1-dil1": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=1),
    "norm-outside1-dil3": dict(cls=Normalised, roi_loss=O, roi_weight=1.0, roi_dilation=3),
}


def evaluate(data, name, seeds):
    cfg = dict(CONFIGS[name])
    cls = cfg.pop("cls", CNNClassifier)
    accs, aucs, start = [], [], time.time()
    for seed in seeds:
        train, _ = group_train_test_split(data.groups, 0.2, random_state=seed)
        fit_part, val_part = (train[i] for i in group_train_test_split(
            data.groups[train], 0.2, random_state=seed + 100))
        idx = np.random.RandomState(seed).choice(fit_part, 570, replace=False)
        net = cls(n_classes=3, max_epochs=20, random_state=seed, **cfg)
        kw = {"roi_masks": data.roi_masks[idx]} if "roi_loss" in cfg else {}
        net.fit(data.X[idx], data.y[idx], **kw)
        s = score_pool(net, data.X[val_part], data.roi_masks[val_part], return_maps=True,
                       progress=False)
        accs.append(float(np.mean(s.y_pred == data.y[val_part])))
        has = s.roi_available
        aucs.append(float(np.nanmean(alignment_t(
            "roi_auc", torch.from_numpy(s.maps[has]).double(),
            torch.from_numpy(data.roi_masks[val_part][has])).numpy())))
    return {"config": name, "acc": accs, "roi_auc": aucs, "acc_mean": float(np.mean(accs)),
            "roi_auc_mean": float(np.mean(aucs)), "seconds": round(time.time() - start)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mri", required=True, help="the brain-tumour figshare folder")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_brain_tumor_figshare(args.mri, image_size=64)
    for name in args.configs.split(","):
        print(json.dumps(evaluate(data, name, range(args.seeds))), flush=True)


if __name__ == "__main__":
    main()
