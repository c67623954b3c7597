"""The full method with given, predicted and no pool ROIs, paired by seed (issue 37, part 5).

Usage (the commands of docs/results.md, "Where nobody drew the pool's ROIs")::

    python benchmarks/pool_rois_evidence.py --given GIVEN --predicted PRED --none NONE \
        [--title "plain MRI"] [--out evidence.md]

``GIVEN`` is an ``xal run`` folder holding ``random``, ``entropy`` and the full method
``dual a=0.3+roi`` with the pool's expert ROIs (``--pool-rois given``); ``PRED`` and
``NONE`` hold the full method alone with ``--pool-rois predicted`` / ``none``, same data,
seeds and protocol (same seed: same split and initial labelled set). Only seeds every arm
finished at the final budget are summarised. Prints markdown: accuracy and attention at
the final budget, the paired differences the issue's goals name (95 % bootstrap
interval, Wilcoxon p), and the ROI model's quality on the test split by number of
labelled ROIs.
"""

import argparse
import json

import pandas as pd

from xal_sklearn.experiments import load_results, paired_comparison

FULL = "dual a=0.3+roi"
ARMS = ("random", "entropy", "full (given)", "full (predicted)", "full (none)")
PAIRS = (("full (predicted)", "full (given)", "within 1 point of itself with given ROIs"),
         ("full (predicted)", "entropy", "ties or beats entropy"),
         ("full (predicted)", "random", "beats random (shortcuts: by >= 5 points)"),
         ("full (given)", "entropy", ""),
         ("full (given)", "random", ""),
         ("full (predicted)", "full (none)", "the term adds, predicted ROIs"),
         ("full (given)", "full (none)", "the term adds, given ROIs"))


def _arms(given, predicted, none):
    g = load_results(given)
    parts = [g[g.strategy.isin(["random", "entropy"])],
             g[g.strategy == FULL].assign(strategy="full (given)")]
    for folder, name in ((predicted, "full (predicted)"), (none, "full (none)")):
        r = load_results(folder)
        parts.append(r[r.strategy == FULL].assign(strategy=name))
    both = pd.concat(parts, ignore_index=True)
    budget = both.n_labelled.max()
    reached = both.groupby(["strategy", "seed"]).n_labelled.transform("max")
    both = both[reached == budget]
    seeds = set.intersection(*(set(g.seed) for _, g in both.groupby("strategy")))
    missing = [a for a in ARMS if a not in set(both.strategy)]
    if missing:
        raise SystemExit(f"no finished runs of {missing}")
    return both[both.seed.isin(seeds)], sorted(seeds), budget


def main(given, predicted, none, title=""):
    both, seeds, budget = _arms(given, predicted, none)
    final = both[both.n_labelled == budget]
    lines = [f"### {title}" if title else "", "",
             f"Seeds {seeds}, {budget} labels at the end. Accuracy and attention "
             f"(test `roi_auc` of the Grad-CAM, chance {final.chance_roi_auc.mean():.3f}) at "
             "the final budget, mean ± std over seeds:", "",
             "| arm | accuracy | balanced accuracy | roi_auc |", "| --- | --- | --- | --- |"]
    for arm in ARMS:
        f = final[final.strategy == arm]
        lines.append(f"| {arm} | {f.accuracy.mean():.3f} ± {f.accuracy.std():.3f} | "
                     f"{f.balanced_accuracy.mean():.3f} | {f.attention_roi_auc.mean():.3f} |")
    lines += ["", "Paired differences at the final budget, accuracy points (95 % bootstrap "
              "interval, Wilcoxon p):", "", "| comparison | difference | p | what it asks |",
              "| --- | --- | --- | --- |"]
    for arm, ref, goal in PAIRS:
        row = paired_comparison(both, reference=ref).set_index("strategy").loc[arm]
        lines.append(f"| {arm} - {ref} | {100 * row.mean_difference:+.1f} "
                     f"[{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}] | "
                     f"{row.p_wilcoxon:.3f} | {goal} |")
    pred = both[both.strategy == "full (predicted)"]
    by = pred.groupby("n_labelled")[["n_labelled_rois", "roi_model_dice", "roi_model_roi_auc"]]
    quality = by.mean().round(3)
    lines += ["", "The ROI model on the test split (mean over seeds) against the labelled ROIs "
              "it was trained on, and where the queried images' ROIs came from:", "",
              "| labels | labelled ROIs | Dice | pixel roi_auc (chance 0.5) | queried with a "
              "predicted ROI |", "| --- | --- | --- | --- | --- |"]
    for n, row in quality.iterrows():
        nxt = pred[pred.n_labelled == n + (pred.n_labelled.diff().max() or 0)]
        src = [s for v in nxt.queried_roi_source.dropna() for s in json.loads(v) or []]
        share = f"{sum(s == 'predicted' for s in src) / len(src):.0%}" if src else "-"
        lines.append(f"| {n} | {row.n_labelled_rois:.0f} | {row.roi_model_dice:.3f} | "
                     f"{row.roi_model_roi_auc:.3f} | {share} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--given", required=True)
    p.add_argument("--predicted", required=True)
    p.add_argument("--none", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--out", default=None, help="also write the markdown here")
    args = p.parse_args()
    text = main(args.given, args.predicted, args.none, args.title)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
