"""ROI-loss settings on two phantom toys where a corner marker is a shortcut (issue 16).

* ``decides``: the marker always agrees with the label and the lesion is faint (noise
  0.15); 160 training and 200 marker-free test phantoms of 32 px, 12 epochs. Printed:
  test accuracy, and the gain over cross-entropy of the same seed. Does the loss make
  the network *use* the lesion?
* ``decoy``: the marker always agrees with the label, the lesion is clear (the default
  noise); 240 training and 120 marker-free test phantoms. Printed: the test Grad-CAM's
  ``mass_in_roi``. Does the loss make the network *look at* the lesion?

The settings are :class:`~xal_sklearn.CNNClassifier` parameters (``SETTINGS``); the
tests ``test_counterexamples_beat_a_shortcut_that_decides_the_label`` and
``test_roi_loss_moves_attention_off_a_decoy_marker`` check a few of these numbers.

    python research/probe_roi_toys.py [--seeds 3] [--settings none,rank,...]

prints one table per toy (means over seeds, per-seed values beside); about 30 s for
the default settings and 3 seeds on 2 cores. Seed ``s`` trains on phantoms of
``random_state=s`` and tests on ``random_state=s + 100``.
"""
import argparse
import time

import numpy as np

from xal_sklearn import CNNClassifier, score_pool
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.roi_loss import LEGACY_ROI_SETTINGS

SETTINGS = {
    "none": {},  # cross-entropy only
    "rank": {"roi_loss": "rank"},  # the package defaults
    "rank-no-warmup": {"roi_loss": "rank", "roi_warmup": 0},
    "dice": {"roi_loss": "dice"},
    # the reference method's loss as before the new defaults: weight 0.1, fixed
    "dice-reference": dict(LEGACY_ROI_SETTINGS, roi_loss="dice", roi_weight=0.1),
    "counterexample": {"roi_loss": "counterexample"},
}

TOYS = {  # name -> (training phantoms, test phantoms, noise)
    "decides": (160, 200, 0.15),
    "decoy": (240, 120, None),
}


def run_toy(toy, settings, seeds):
    n_train, n_test, noise = TOYS[toy]
    kw = {} if noise is None else {"noise": noise}
    rows = {name: [] for name in settings}
    for seed in seeds:
        train = make_lesion_phantoms(n_train, 32, shortcut=1.0, random_state=seed, **kw)
        test = make_lesion_phantoms(n_test, 32, shortcut=0.0, random_state=seed + 100, **kw)
        for name in settings:
            params = SETTINGS[name]
            net = CNNClassifier(n_classes=3, max_epochs=12, random_state=seed, **params)
            net.fit(train.X, train.y, roi_masks=train.roi_masks if params else None)
            if toy == "decides":
                rows[name].append(float(np.mean(net.predict(test.X) == test.y)))
            else:
                s = score_pool(net, test.X, test.roi_masks, alignment="mass_in_roi",
                               progress=False)
                rows[name].append(float(np.nanmean(s.alignment)))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--toys", default=",".join(TOYS))
    args = p.parse_args()
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS] + [
        t for t in args.toys.split(",") if t not in TOYS]
    if unknown:
        p.error(f"unknown setting or toy {', '.join(unknown)}; settings: "
                f"{', '.join(SETTINGS)}; toys: {', '.join(TOYS)}")
    for toy in args.toys.split(","):
        start = time.time()
        rows = run_toy(toy, names, range(args.seeds))
        metric = "test accuracy" if toy == "decides" else "test mass_in_roi"
        print(f"\n{toy}: {metric}, {args.seeds} seeds ({time.time() - start:.0f} s)\n")
        print(f"| setting | {metric} | per seed |"
              + (" gain over none, per seed |" if toy == "decides" else ""))
        print("| --- | --- | --- |" + (" --- |" if toy == "decides" else ""))
        base = np.array(rows.get("none", [np.nan] * args.seeds))
        for name, values in rows.items():
            line = (f"| {name} | {np.mean(values):.3f} | "
                    f"{', '.join(f'{v:.3f}' for v in values)} |")
            if toy == "decides":
                line += " " + ", ".join(f"{g:+.3f}" for g in np.array(values) - base) + " |"
            print(line)


if __name__ == "__main__":
    main()
