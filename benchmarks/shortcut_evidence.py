"""The full method against its baselines and ablations on shortcut data, from two runs.

``xal run`` trains every strategy of a run with one loss, so the full method (dual-
criterion selection + ROI-guided training) and its ablations come from two results
folders of the same data, seeds and protocol: one with cross-entropy only, one with
``--roi-loss``. Same seed = same split and initial labelled set, so they pair by seed.

Usage (the commands of docs/results.md, then)::

    python benchmarks/shortcut_evidence.py mri_marker_none mri_marker_rank [more pairs ...]
    python benchmarks/shortcut_evidence.py --one mri_marker_ctx16 [more ...]

``--one``: each folder holds both trainings, as ``xal run --strategies
random,entropy,dual,random+roi,dual+roi`` writes them (the ``+roi`` arms).

prints, per pair, accuracy and attention at the final budget, and the paired
differences (95 % bootstrap interval, Wilcoxon p) at the final budget and by ALC; a
comparison whose strategies a run left out is left out.
"""

import argparse
from pathlib import Path

import pandas as pd

from xal_sklearn.experiments import load_results, paired_comparison

NAMES = {"none": {"random": "random", "entropy": "entropy", "dual a=0.3": "dual (no ROI loss)"},
         "roi": {"random": "random + ROI loss", "entropy": "entropy + ROI loss",
                 "dual a=0.3": "full (dual + ROI loss)"}}
COMPARISONS = [("full (dual + ROI loss)", "random"), ("full (dual + ROI loss)", "entropy"),
               ("full (dual + ROI loss)", "dual (no ROI loss)"),
               ("full (dual + ROI loss)", "random + ROI loss"),
               # same training, selection differs: what the misalignment criterion adds
               ("full (dual + ROI loss)", "entropy + ROI loss"), ("entropy", "random"),
               ("dual (no ROI loss)", "random"), ("random + ROI loss", "random")]


def combined(plain, roi=None):
    if roi is None:  # one folder with both: the +roi arms trained with the ROI loss
        table = load_results(plain)
        names = {**NAMES["none"], **{k + "+roi": v for k, v in NAMES["roi"].items()}}
        table = table[table["strategy"].isin(names)]
        return table.assign(strategy=table["strategy"].map(names)).reset_index(drop=True)
    parts = []
    for folder, names in ((plain, NAMES["none"]), (roi, NAMES["roi"])):
        table = load_results(folder)
        # a folder may hold more strategies (the leaderboard): keep the three named here
        table = table[table["strategy"].isin(names)]
        parts.append(table.assign(strategy=table["strategy"].map(names)))
    return pd.concat(parts, ignore_index=True)


def _cell(row):
    return (f"{row['mean_difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], "
            f"p {row['p_wilcoxon']:.3f}: {row['verdict']}")


def report(plain, roi=None):
    results = combined(plain, roi)
    final = results[results["n_labelled"] == results["n_labelled"].max()]
    means = final.groupby("strategy", sort=False)[["accuracy", "attention_roi_auc",
                                                   "attention_mass_in_roi"]].agg(["mean", "std"])
    chance = {m: results[f"chance_{m}"].mean() for m in ("roi_auc", "mass_in_roi")}
    lines = [f"### {Path(plain).name}" + (f" + {Path(roi).name}" if roi else ""), "",
             "| strategy | accuracy | roi_auc (chance %.3f) | mass_in_roi (chance %.3f) |"
             % (chance["roi_auc"], chance["mass_in_roi"]), "| --- | --- | --- | --- |"]
    for name, row in means.iterrows():
        lines.append(f"| {name} | " + " | ".join(
            f"{row[(m, 'mean')]:.3f} ± {row[(m, 'std')]:.3f}"
            for m in ("accuracy", "attention_roi_auc", "attention_mass_in_roi")) + " |")
    lines += ["", "| comparison | accuracy at the final budget | ALC |", "| --- | --- | --- |"]
    present = set(results["strategy"])
    for name, reference in COMPARISONS:
        if not {name, reference} <= present:  # a run of fewer strategies (--strategies)
            continue
        cells = []
        for summary in ("final", "alc"):
            table = paired_comparison(results, "accuracy", reference, summary=summary)
            cells.append(_cell(table.set_index("strategy").loc[name]))
        lines.append(f"| {name} - {reference} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="pairs: cross-entropy folder, ROI-loss folder")
    p.add_argument("--one", action="store_true",
                   help="each folder holds both trainings (+roi arms), not pairs of folders")
    args = p.parse_args(argv)
    if args.one:
        print("\n\n".join(report(folder) for folder in args.folders))
        return
    if len(args.folders) % 2:
        p.error("give the folders in pairs: cross-entropy run, then ROI-loss run")
    pairs = zip(args.folders[::2], args.folders[1::2])
    print("\n\n".join(report(plain, roi) for plain, roi in pairs))


if __name__ == "__main__":
    main()
