"""A leaderboard of active-learning strategies from one or more ``xal run`` results folders.

Usage (the command of docs/results.md, section 1; the lab log's "The leaderboard")::

    python benchmarks/leaderboard.py RESULTS_FOLDER [MORE_FOLDERS ...] [--markdown OUT.md]

Folders of the same data, seeds and protocol are concatenated (same seed = same split
and initial labelled set, so they pair by seed). Prints one markdown table: every
strategy's test accuracy at the final budget and its ALC (mean ± std over seeds), its
attention (``roi_auc`` and ``mass_in_roi`` with their chance levels), its paired
difference from random *and* from entropy at the final budget and by ALC (mean, 95 %
percentile-bootstrap interval over seeds, Wilcoxon p, verdict), and its rank by mean
final accuracy; then a line on where our method stands against the strongest baseline.
"""

import argparse

import pandas as pd

from xal_sklearn.experiments import learning_curve_area, load_results, paired_comparison

OURS = ("dual", "misalignment")  # names of our strategies start with these


def _diff(table, name):
    if name not in table.index:
        return "—"
    row = table.loc[name]
    return (f"{row['mean_difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] "
            f"p {row['p_wilcoxon']:.2f}")


def leaderboard(results):
    final_n = results["n_labelled"].max()
    final = results[results["n_labelled"] == final_n]
    acc = final.groupby("strategy")["accuracy"].agg(["mean", "std"])
    alc = learning_curve_area(results).groupby("strategy")["alc"].agg(["mean", "std"])
    att = final.groupby("strategy")[["attention_roi_auc", "attention_mass_in_roi"]].mean()
    chance = {m: results[f"chance_{m}"].mean() for m in ("roi_auc", "mass_in_roi")}
    comps = {}
    for ref in ("random", "entropy"):
        for summary in ("final", "alc"):
            if ref in set(results["strategy"]):
                comps[ref, summary] = paired_comparison(results, reference=ref,
                                                        summary=summary).set_index("strategy")
    order = acc.sort_values("mean", ascending=False).index
    n_seeds = final.groupby("strategy")["seed"].nunique()
    lines = [f"Test accuracy at {final_n} labels and ALC (mean ± std over "
             f"{n_seeds.min()}-{n_seeds.max()} seeds), attention at {final_n} labels "
             f"(chance: roi_auc {chance['roi_auc']:.3f}, mass_in_roi "
             f"{chance['mass_in_roi']:.3f}), and paired differences (95 % bootstrap "
             "interval, Wilcoxon p):", "",
             "| rank | strategy | accuracy | ALC | roi_auc | mass_in_roi | − random (final) "
             "| − random (ALC) | − entropy (final) | − entropy (ALC) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rank, name in enumerate(order, 1):
        cells = [str(rank), f"`{name}`", f"{acc.loc[name, 'mean']:.3f} ± {acc.loc[name, 'std']:.3f}",
                 f"{alc.loc[name, 'mean']:.3f} ± {alc.loc[name, 'std']:.3f}",
                 f"{att.loc[name, 'attention_roi_auc']:.3f}",
                 f"{att.loc[name, 'attention_mass_in_roi']:.3f}"]
        for key in (("random", "final"), ("random", "alc"), ("entropy", "final"),
                    ("entropy", "alc")):
            cells.append(_diff(comps[key], name) if key in comps else "—")
        lines.append("| " + " | ".join(cells) + " |")
    ours = [n for n in order if n.startswith(OURS)]
    theirs = [n for n in order if not n.startswith(OURS) and n != "random"]
    if ours and theirs:
        best, strongest = ours[0], theirs[0]
        diff = (final[final.strategy == best].set_index("seed")["accuracy"]
                - final[final.strategy == strongest].set_index("seed")["accuracy"]).dropna()
        lines += ["", f"Our best arm, `{best}`, ranks {list(order).index(best) + 1} of "
                      f"{len(order)}; the strongest baseline, `{strongest}`, ranks "
                      f"{list(order).index(strongest) + 1}; `{best}` − `{strongest}` at "
                      f"{final_n} labels: {diff.mean():+.3f} (per seed: "
                      + ", ".join(f"{v:+.3f}" for v in diff) + ")."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--markdown", help="also write the table to this file")
    args = p.parse_args(argv)
    results = pd.concat([load_results(f) for f in args.folders], ignore_index=True)
    text = leaderboard(results)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
