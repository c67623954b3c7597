"""Is the class in the tumour? Cross-entropy on images blacked out outside the ROI.

For seeds 0-2, as the deleted ``probe_roi_settings.py`` (research/README.md): the seed's
group split, validation groups split off its training part (the test split is never read),
570 random training images; train and validate a ``CNNClassifier`` (20 epochs, 64 px) on
images whose pixels outside the ROI grown by ``--dilations`` pixels are set to 0. The
masked images also show the ROI's outline, which the full images do not, so read the
accuracy as an upper bound on what the ROI's content alone carries. ``--outside`` does the
opposite: the ROI grown by ``--dilations`` pixels is set to 0 and the rest kept, so the
accuracy says how much of the class the context carries (the hole shows the tumour's
place, size and outline: an upper bound again).

    python research/probe_roi_only.py --mri ../shared/data/brain-tumor-figshare [--outside]
"""
import argparse
import json

import numpy as np
import torch

from xal_sklearn import CNNClassifier
from xal_sklearn.datasets import group_train_test_split, load_brain_tumor_figshare
from xal_sklearn.roi_loss import masks_to_grid


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mri", required=True, help="the brain-tumour figshare folder")
    p.add_argument("--dilations", default="2,8", help="comma-separated, pixels at 64 px")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--outside", action="store_true",
                   help="keep the context and black out the (grown) ROI instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    d = load_brain_tumor_figshare(args.mri, image_size=64)
    for dil in map(int, args.dilations.split(",")):
        keep = masks_to_grid(torch.from_numpy(d.roi_masks), (64, 64), dil).numpy() > 0
        X = d.X * (~keep if args.outside else keep)[:, None]
        accs = []
        for seed in range(args.seeds):
            train, _ = group_train_test_split(d.groups, 0.2, random_state=seed)
            fit_part, val_part = (train[i] for i in group_train_test_split(
                d.groups[train], 0.2, random_state=seed + 100))
            idx = np.random.RandomState(seed).choice(fit_part, 570, replace=False)
            net = CNNClassifier(n_classes=3, max_epochs=20, random_state=seed)
            net.fit(X[idx], d.y[idx])
            accs.append(float(np.mean(net.predict(X[val_part]) == d.y[val_part])))
        kept = "context_only" if args.outside else "roi_only"
        print(json.dumps({f"{kept}_dilation_px": dil, "acc": accs,
                          "mean": float(np.mean(accs))}), flush=True)


if __name__ == "__main__":
    main()
