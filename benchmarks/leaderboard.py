"""The leaderboard: every strategy against random and entropy, on one or more data sets.

Quoted by docs/results.md (section 1) and the lab log's "The leaderboard". Each ``--set
NAME=FOLDER[,FOLDER...]`` is one data set (and start): ``xal run`` folders of the same
data, seeds and protocol, concatenated (same seed = same split and initial labelled set,
so arms pair by seed). Per set it prints one markdown table: each arm's test accuracy
and balanced accuracy at the final budget, its ALC, its attention (``roi_auc``, chance
beside), and its paired difference from random and from entropy at the final budget and
by ALC (mean, 95 % percentile-bootstrap interval, Wilcoxon p, and the verdict after
Holm's correction across the arms of the table: "better" / "worse" where the adjusted p
is below 0.05, which takes at least 7 seeds when there are several arms). Then the rank
table: each arm's rank by mean final accuracy on each set and on average, and each of
our arms' difference from the strongest baseline (the best arm that is not ours or
random), the figure of merit. ``--figures DIR`` writes, per set, the learning curves of
the top arms with their bootstrap intervals; ``--compact FILE``, per set, the shorter table
docs/results.md shows (differences in points, bold where Holm's correction rejects). A
folder read while it still runs gives its
finished strategy-seeds only; the unfinished ones are counted under the set's title.

    python benchmarks/leaderboard.py --set "MRI=mri_scratch" --set "BUSI=busi_scratch" \
        [--figures docs/results/leaderboard] [--markdown leaderboard.md] [--top 5] \
        [--compact results_tables.md]

A bare folder (``python benchmarks/leaderboard.py FOLDER``) is one set named by its data.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from xal_sklearn.experiments import holm, learning_curve_area, load_results, paired_comparison

OURS = ("dual", "misalignment")  # names of our strategies start with these
LEVEL = 0.05


def _comparisons(results, reference):
    """Final and ALC comparisons against ``reference`` with Holm-adjusted verdicts."""
    out = {}
    for summary in ("final", "alc"):
        table = paired_comparison(results, reference=reference, summary=summary,
                                  min_seeds=2).set_index("strategy")
        table["p_holm"] = holm(table["p_wilcoxon"].to_numpy())
        side = np.sign(table["mean_difference"])
        table["holm"] = np.where(table["p_holm"] < LEVEL,
                                 np.where(side > 0, "better", "worse"), "—")
        out[summary] = table
    return out


def reference_comparisons(results):
    """:func:`_comparisons` against random and against entropy, for those run.

    Computed once per set and passed to :func:`set_table` and :func:`compact_table`:
    with ties among paired differences each Wilcoxon test is slow (about 1 s).
    """
    return {r: _comparisons(results, r) for r in ("random", "entropy")
            if r in set(results["strategy"])}


def _cell(table, name):
    if name not in table.index:
        return "—"
    row = table.loc[name]
    return (f"{row['mean_difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] "
            f"p {row['p_wilcoxon']:.3f}, {row['holm']}")


def finished_runs(results):
    """The strategy-seeds that reached the set's final budget, and how many did not.

    An unfinished run (a folder read while it still runs) has only its early rounds: its
    ALC would be an average over them, and its "final" accuracy an early one.
    """
    reached = results.groupby(["strategy", "seed"])["n_labelled"].transform("max")
    done = reached == results["n_labelled"].max()
    unfinished = results.loc[~done, ["strategy", "seed"]].drop_duplicates()
    return results[done], len(unfinished)


def set_table(name, results, unfinished=0, refs=None):
    """The markdown table of one set, and its arms ordered by mean final accuracy.

    ``results``: finished runs only (:func:`finished_runs`); ``unfinished``: how many
    were left out, said under the title; ``refs``: :func:`reference_comparisons` of
    ``results`` when already computed.
    """
    final_n = results["n_labelled"].max()
    final = results[results["n_labelled"] == final_n]
    by = final.groupby("strategy")
    acc, bacc = by["accuracy"].mean(), by["balanced_accuracy"].mean()
    alc = learning_curve_area(results).groupby("strategy")["alc"].mean()
    att = by["attention_roi_auc"].mean()
    chance = results["chance_roi_auc"].mean()
    refs = reference_comparisons(results) if refs is None else refs
    order = list(acc.sort_values(ascending=False).index)
    seeds = by["seed"].nunique()
    lines = [f"### {name}: {final_n} labels, {seeds.min()}-{seeds.max()} seeds", "",
             f"Mean over seeds; attention is the test `roi_auc` (chance {chance:.3f}); "
             "differences are paired by seed (95 % bootstrap interval, Wilcoxon p, verdict "
             f"after Holm's correction across the {len(order) - 1} other arms)."
             + (f" {unfinished} unfinished strategy-seed(s) left out." if unfinished else ""),
             "",
             "| rank | arm | accuracy | balanced acc. | ALC | roi_auc | − random (final) "
             "| − random (ALC) | − entropy (final) | − entropy (ALC) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rank, arm in enumerate(order, 1):
        cells = [str(rank), f"`{arm}`", f"{acc[arm]:.3f}", f"{bacc[arm]:.3f}",
                 f"{alc[arm]:.3f}", f"{att[arm]:.3f}"]
        for ref in ("random", "entropy"):
            for summary in ("final", "alc"):
                cells.append(_cell(refs[ref][summary], arm) if ref in refs else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), order


def _points(row, holm):
    """'+1.4 [+0.3, +2.5]' in points with typographic minus signs, bold when Holm rejects."""
    text = (f"{100 * row['mean_difference']:+.1f} [{100 * row['ci_low']:+.1f}, "
            f"{100 * row['ci_high']:+.1f}]").replace("-", "\u2212")
    return f"**{text}**" if holm != "—" else text


def compact_table(results, order, refs=None):
    """The table docs/results.md shows: final accuracy, balanced accuracy, attention and
    the difference from random and from entropy in points (bold: a verdict after Holm).

    ``refs``: :func:`reference_comparisons` of ``results`` when already computed.
    """
    final = results[results["n_labelled"] == results["n_labelled"].max()]
    means = final.groupby("strategy")[["accuracy", "balanced_accuracy",
                                       "attention_roi_auc"]].mean()
    refs = reference_comparisons(results) if refs is None else refs
    refs = {ref: tables["final"] for ref, tables in refs.items()}
    lines = ["| rank | arm | accuracy | balanced acc. | `roi_auc` | − random | − entropy |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for rank, arm in enumerate(order, 1):
        cells = [str(rank), arm.replace(" a=0.3", "")] + [f"{v:.3f}" for v in means.loc[arm]]
        for ref in ("random", "entropy"):
            table = refs.get(ref)
            cells.append(_points(table.loc[arm], table.loc[arm, "holm"])
                         if table is not None and arm in table.index else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rank_table(sets):
    """Each arm's rank per set and on average, and ours against the strongest baseline."""
    ranks = pd.DataFrame({name: pd.Series({arm: k for k, arm in enumerate(order, 1)})
                          for name, (_, order, *_) in sets.items()})
    ranks["mean rank"] = ranks.mean(axis=1)
    ranks = ranks.sort_values("mean rank")
    lines = ["### Rank by mean final accuracy, per set and on average", "",
             "| arm | " + " | ".join(ranks.columns) + " |",
             "|" + " --- |" * (len(ranks.columns) + 1)]
    for arm, row in ranks.iterrows():
        lines.append(f"| `{arm}` | " + " | ".join(
            "—" if np.isnan(v) else (f"{v:.1f}" if c == "mean rank" else str(int(v)))
            for c, v in row.items()) + " |")
    lines += ["", "Our arms against the strongest baseline of each set (the best arm that "
              "is neither ours nor random), at the final budget, paired by seed:", ""]
    for name, (_, order, results, *_) in sets.items():
        theirs = [a for a in order if not a.startswith(OURS) and a != "random"
                  and not a.endswith("+roi")]
        if not theirs:
            continue
        strongest = theirs[0]
        table = paired_comparison(results, reference=strongest, min_seeds=2).set_index(
            "strategy")
        ours = [a for a in order if a.startswith(OURS)]
        words = "; ".join(f"`{a}` {100 * table.loc[a, 'mean_difference']:+.1f} "
                          f"[{100 * table.loc[a, 'ci_low']:+.1f}, "
                          f"{100 * table.loc[a, 'ci_high']:+.1f}] (rank {order.index(a) + 1})"
                          for a in ours)
        lines.append(f"- {name}: strongest baseline `{strongest}` (rank "
                     f"{order.index(strongest) + 1}); {words or 'no arm of ours ran'}.")
    return "\n".join(lines)


def plot_top(name, results, order, path, top=5):
    """Learning curves of the ``top`` arms (and random), mean and 95 % bootstrap band."""
    from matplotlib.figure import Figure

    arms = list(dict.fromkeys(order[:top] + (["random"] if "random" in order else [])))
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for arm in arms:
        part = results[results["strategy"] == arm]
        xs, means, lows, highs = [], [], [], []
        for n, g in part.groupby("n_labelled"):
            values = g["accuracy"].to_numpy()
            xs.append(n)
            means.append(values.mean())
            if len(values) >= 2 and np.ptp(values) > 0:
                ci = stats.bootstrap((values,), np.mean, n_resamples=2000,
                                     method="percentile", random_state=0).confidence_interval
                lows.append(ci.low)
                highs.append(ci.high)
            else:
                lows.append(values.mean())
                highs.append(values.mean())
        line, = ax.plot(xs, means, marker="o", ms=3, label=arm)
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{name}: the top arms (mean, 95 % bootstrap band over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _sets(args):
    sets = {}
    for spec in args.set or []:
        name, _, folders = spec.partition("=")
        sets[name] = folders.split(",")
    for folder in args.folders:
        config = json.loads((Path(folder) / "config.json").read_text())
        sets[config.get("extra", {}).get("description", folder)] = [folder]
    if not sets:
        raise SystemExit("give folders, or --set NAME=FOLDER[,FOLDER...]")
    return sets


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", help="xal run folders of one set")
    p.add_argument("--set", action="append", help="NAME=FOLDER[,FOLDER...]")
    p.add_argument("--markdown", help="also write the tables to this file")
    p.add_argument("--figures", help="folder for one learning-curve PNG per set")
    p.add_argument("--top", type=int, default=5, help="arms drawn in each figure")
    p.add_argument("--compact", help="also write results.md's shorter table per set here")
    args = p.parse_args(argv)
    sets = {}
    for name, folders in _sets(args).items():
        results, unfinished = finished_runs(
            pd.concat([load_results(f) for f in folders], ignore_index=True))
        refs = reference_comparisons(results)
        text, order = set_table(name, results, unfinished, refs)
        sets[name] = (text, order, results, refs)
        if args.figures:
            Path(args.figures).mkdir(parents=True, exist_ok=True)
            slug = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
            plot_top(name, results, order, Path(args.figures) / f"curves_{slug}.png",
                     args.top)
    text = "\n\n".join([t for t, *_ in sets.values()] + [rank_table(sets)])
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.compact:
        Path(args.compact).write_text("\n\n".join(
            f"### {name}\n\n{compact_table(results, order, refs)}"
            for name, (_, order, results, refs) in sets.items()) + "\n")


if __name__ == "__main__":
    main()
