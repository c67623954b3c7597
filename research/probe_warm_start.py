"""How to pretrain on the pool and how to fine-tune from it, judged on validation groups.

A naive warm start (SimCLR, then every weight fine-tuned at the usual rate) does not
beat training from scratch at 570 labels (issue 17; docs/results.md). This probe
searches the recipe without touching the test split. For each seed: the seed's group
split (as ``xal run``), then validation groups split off its training part
(seed + 100); the rest is the pool. Each pretraining setting runs once per seed on the
pool's images (no labels); then ``--draws`` random draws of ``--labels`` pool labels
are fitted with each fine-tuning recipe and scored on the validation groups
(accuracy, and ``roi_auc`` of the predicted class's Grad-CAM against the masks).

Pretraining settings (``--pretrain``, comma-separated; a name is METHOD + EPOCHS with
optional suffixes): ``simclr50``, ``byol50``, ``simclr100``; ``-crop0.8`` random
crops of 80-100 % of the area (default 50-100 %).

Fine-tuning recipes (``--recipes``), all 20 epochs, Adam 1e-3 on a cosine unless said,
through skorch's own parameters and callbacks:

* ``scratch``: random initialisation (the reference);
* ``ft``: every weight from the warm start, trained at the usual rate;
* ``ft-enc0.1``: the encoder at a tenth of the rate
  (``optimizer__param_groups=[("features.*", {"lr": 1e-4})]``);
* ``frozen``: only the head is trained (``skorch.callbacks.Freezer("features.*")``),
  batch-norm statistics still adapt;
* ``lp-ft``: head alone for the first half of the epochs, then everything
  (``Freezer`` then ``Unfreezer`` at epoch 11);
* ``frozen-lr0.03``: ``frozen`` at rate 0.03; ``ft-head0.01`` / ``lp-ft-head0.01``: the
  head at rate 0.01 (``optimizer__param_groups``); ``ft-40``: 40 epochs;
* ``probe-ft`` / ``probe-ft-lr3e-4``: the head starts from a logistic-regression
  probe of the frozen features (``xal_sklearn.finetune.ProbeHead``), then everything
  is trained (at 1e-3 / 3e-4); ``probe-ft-floorR``: ``probe-ft`` with
  ``ProbeHead(sd_floor=R)`` (``probe-ft`` is the default 1.0; ``floor0`` standardises
  every feature exactly, as before that floor existed); ``scratch-40``: ``scratch``
  for 40 epochs;
* ``RECIPE+LOSS[-wW][-warmK][-fixed][-sum]``: a recipe trained with an ROI loss on the
  labelled images' masks (``+rank``: the defaults; ``-w3``: ``roi_weight=3``;
  ``-warm0``: ``roi_warmup=0``, an int in epochs or a share such as ``0.25``;
  ``-fixed``: ``roi_balance="fixed"``; ``-sum``: ``roi_conflict="sum"``, the term's
  gradient added as it is; ``-project``: ``roi_conflict="project"``), e.g.
  ``probe-ft+rank-w3-warm0``. Rows name the settings of the day they were written:
  ``+rank-w1-warm0.5-sum`` is the first defaults' ``+rank``, ``+rank-w3-project`` the
  second defaults' (rows written before December 5, 2026 say ``+rank`` for it);
* ``logreg``: not a network fit: logistic regression on the standardised frozen
  features (the linear probe of ``bench_pretrain.py``).

    python research/probe_warm_start.py --mri ../shared/data/brain-tumor-figshare \
        [--pretrain simclr50,byol50] [--recipes scratch,ft,frozen,lp-ft] \
        [--seeds 2] [--draws 2] [--out probe_warm]

Weights are saved under ``--out`` and reused when the probe is run again; each fit's
row is appended to ``--out/results.jsonl``.
"""
import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from skorch.callbacks import Freezer, Unfreezer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_pretrain import features, probe  # noqa: E402  (the benchmark's linear probe)

from xal_sklearn import CNNClassifier, pretrain_encoder, score_pool
from xal_sklearn.alignment import roi_auc
from xal_sklearn.datasets import group_train_test_split, load_brain_tumor_figshare
from xal_sklearn.finetune import ProbeHead
from xal_sklearn.pretrain import EncoderWeights
from xal_sklearn.roi_loss import ROI_LOSSES, resolve_roi_settings

EPOCHS = 20


def pretrain_kwargs(name):
    m = re.fullmatch(r"(simclr|byol)(\d+)((?:-crop[\d.]+)?)", name)
    if not m:
        raise SystemExit(f"unknown pretraining setting {name!r}")
    kwargs = {"method": m[1], "epochs": int(m[2])}
    if m[3]:
        kwargs["crop_scale"] = (float(m[3][5:]), 1.0)
    return kwargs


def recipe_kwargs(name, weights):
    recipe, plus, roi = name.partition("+")
    if plus:
        return {**recipe_kwargs(recipe, weights), **roi_kwargs(roi)}
    if name in ("scratch", "scratch-40"):
        return {} if name == "scratch" else {"max_epochs": 40}
    base = {"init_weights": weights}
    if name == "ft":
        return base
    if name == "ft-enc0.1":
        return {**base, "optimizer__param_groups": [("features.*", {"lr": 1e-4})]}
    if name == "frozen":
        return {**base, "callbacks": [("freeze", Freezer("features.*"))]}
    if name == "lp-ft":
        half = EPOCHS // 2 + 1
        return {**base, "callbacks": [("freeze", Freezer("features.*", at=1)),
                                      ("unfreeze", Unfreezer("features.*", at=half))]}
    if name == "frozen-lr0.03":
        return {**recipe_kwargs("frozen", weights), "lr": 0.03}
    if name == "ft-head0.01":
        return {**base, "optimizer__param_groups": [("classifier.*", {"lr": 1e-2})]}
    if name == "lp-ft-head0.01":
        return {**recipe_kwargs("lp-ft", weights),
                "optimizer__param_groups": [("classifier.*", {"lr": 1e-2})]}
    if name == "probe-ft":
        return {**base, "callbacks": [("probe", ProbeHead())]}
    m = re.fullmatch(r"probe-ft-floor([\d.]+)", name)
    if m:
        return {**base, "callbacks": [("probe", ProbeHead(sd_floor=float(m[1])))]}
    if name == "probe-ft-lr3e-4":
        return {**recipe_kwargs("probe-ft", weights), "lr": 3e-4}
    if name == "ft-40":
        return {**base, "max_epochs": 40}
    raise SystemExit(f"unknown recipe {name!r}")


def roi_kwargs(name):
    """``rank``, ``rank-w3``, ``rank-warm0``, ``rank-fixed-w1``: the ROI loss and its
    settings (``w``: ``roi_weight``; ``warm``: ``roi_warmup``, an int in epochs or a
    share; ``fixed``: ``roi_balance="fixed"``; ``sum``, ``project``: that
    ``roi_conflict``); unnamed settings keep the defaults."""
    loss, *opts = name.split("-")
    if loss not in ROI_LOSSES:
        raise SystemExit(f"unknown ROI loss {loss!r} in a recipe")
    kwargs = {"roi_loss": loss}
    for opt in opts:
        m = re.fullmatch(r"(w|warm)([\d.]+)|fixed|sum|project", opt)
        if not m:
            raise SystemExit(f"unknown ROI setting {opt!r} in a recipe")
        if opt == "fixed":
            kwargs["roi_balance"] = "fixed"
        elif opt in ("sum", "project"):
            kwargs["roi_conflict"] = opt
        elif m[1] == "w":
            kwargs["roi_weight"] = float(m[2])
        else:
            kwargs["roi_warmup"] = float(m[2]) if "." in m[2] else int(m[2])
    try:  # the classifier's own checks, so a bad setting stops before any pretraining
        resolve_roi_settings(**kwargs)
    except ValueError as e:
        raise SystemExit(f"recipe +{name}: {e}") from None
    return kwargs


def logistic_probe(weights, X, y, Xv, yv):
    """Logistic regression on standardised frozen features (bench_pretrain's linear probe)."""
    return float(probe(features(weights, X, 0), y, features(weights, Xv, 0), yv))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mri", required=True)
    p.add_argument("--pretrain", default="simclr50,byol50")
    p.add_argument("--recipes", default="scratch,ft,ft-enc0.1,frozen,lp-ft")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--labels", type=int, default=570)
    p.add_argument("--out", default="probe_warm")
    args = p.parse_args()
    settings = args.pretrain.split(",")
    recipes = args.recipes.split(",")
    for s in settings:
        pretrain_kwargs(s)
    for r in recipes:
        if r != "logreg":
            recipe_kwargs(r, None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done = set()
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done.add((row["seed"], row["draw"], row["pretrain"], row["recipe"]))
    data = load_brain_tumor_figshare(args.mri, image_size=64)
    for seed in range(args.seeds):
        train, _ = group_train_test_split(data.groups, 0.2, random_state=seed)
        pool, val = (train[i] for i in group_train_test_split(
            data.groups[train], 0.2, random_state=seed + 100))
        Xv, yv, Mv = data.X[val], data.y[val], data.roi_masks[val]
        weights = {}
        for s in settings:
            path = out / f"seed{seed}-{s}.pt"
            if not path.exists():
                w = pretrain_encoder(data.X[pool], random_state=seed, progress=False,
                                     **pretrain_kwargs(s))
                w.save(path)
                print(f"seed {seed} {s}: pretrained in {w.info['seconds']} s "
                      f"(final loss {w.info['final_loss']:.3f})", flush=True)
            weights[s] = EncoderWeights.load(path)
        for draw in range(args.draws):
            rng = np.random.default_rng([seed, draw])
            idx = rng.choice(pool, args.labels, replace=False)
            for s in settings:
                for r in recipes:
                    key = (seed, draw, "-" if r.startswith("scratch") else s, r)
                    if key in done:
                        continue
                    done.add(key)
                    if r == "logreg":
                        row = dict(seed=seed, draw=draw, pretrain=s, recipe=r,
                                   accuracy=logistic_probe(weights[s], data.X[idx],
                                                           data.y[idx], Xv, yv),
                                   roi_auc=float("nan"), seconds=0.0)
                        print(json.dumps(row), flush=True)
                        with open(log, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        continue
                    kwargs = {"max_epochs": EPOCHS, **recipe_kwargs(r, weights[s])}
                    net = CNNClassifier(n_classes=3, random_state=seed * 100 + draw, **kwargs)
                    start = time.perf_counter()
                    masks = data.roi_masks[idx] if "roi_loss" in kwargs else None
                    net.fit(data.X[idx], data.y[idx], roi_masks=masks)
                    seconds = time.perf_counter() - start
                    sc = score_pool(net, Xv, Mv, return_maps=True, progress=False)
                    has = sc.roi_available
                    row = dict(seed=seed, draw=draw, pretrain=key[2], recipe=r,
                               accuracy=float(np.mean(sc.y_pred == yv)),
                               roi_auc=float(np.nanmean(roi_auc(sc.maps[has], Mv[has]))),
                               seconds=round(seconds, 1))
                    print(json.dumps(row), flush=True)
                    with open(log, "a") as f:
                        f.write(json.dumps(row) + "\n")
    table = pd.DataFrame([json.loads(x) for x in log.read_text().splitlines()])
    table["setting"] = table["pretrain"] + " " + table["recipe"]
    ref = table[table["recipe"] == "scratch"].set_index(["seed", "draw"])["accuracy"]
    table["minus_scratch"] = table["accuracy"] - ref.reindex(
        pd.MultiIndex.from_frame(table[["seed", "draw"]])).to_numpy()
    summary = table.groupby("setting")[["accuracy", "minus_scratch", "roi_auc"]].agg(
        ["mean", "min", "max"]).round(3)
    print(f"\nvalidation groups, {args.labels} random labels, {args.seeds} seeds x "
          f"{args.draws} draws (minus_scratch paired by seed and draw)")
    print(summary.to_string())


if __name__ == "__main__":
    main()
