"""Warm start against from scratch, paired by seed, from two ``xal run`` results folders.

Usage (the commands of docs/results.md, "A warm start from the pool")::

    python benchmarks/warm_start_pairs.py SCRATCH_FOLDER WARM_FOLDER \
        [--arm "WARM NAME" OTHER_SCRATCH_FOLDER "SCRATCH NAME" ...] [--names A B]

Both folders must share data, seeds and protocol (same seed = same split and initial
labelled set); only the seeds both hold are paired (and summarised), so a 3-seed run
pairs with the first 3 seeds of a 5-seed one, and a run still going (not at the final
budget) is left out with its seed, as the printout says. ``--names`` renames the two sides
(default ``scratch warm``), for other pairs of the same protocol, such as 64 px
against 128 px (docs/results.md, "The warm start at 128 px"). ``--arm`` takes one warm strategy's from-scratch reference from another
results folder of the same protocol, under another name (the full method trained with
the current ROI-loss defaults lives in ``docs/results/roi_rank/plain`` as
``dual a=0.3``). Prints accuracy and roi_auc at the final budget, ALC, and per strategy the
paired difference warm - scratch (95 % bootstrap interval, Wilcoxon p) and its value on
each seed at the final budget.
"""

import argparse

import pandas as pd

from xal_sklearn.experiments import learning_curve_area, load_results, paired_comparison


def _cell(row):
    return (f"{row.mean_difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}] "
            f"p {row.p_wilcoxon:.3f} {row.verdict}")


def main(scratch_folder, warm_folder, arms=(), labels=("scratch", "warm")):
    first, second = labels
    warm = load_results(warm_folder)
    names = [n for n in dict.fromkeys(warm.strategy)]
    scratch = load_results(scratch_folder)
    scratch = scratch[scratch.strategy.isin(names)]
    for name, folder, other in arms:
        extra = load_results(folder)
        extra = extra[extra.strategy == other].assign(strategy=name)
        if extra.empty:
            raise SystemExit(f"{folder} has no strategy {other!r}")
        scratch = pd.concat([scratch[scratch.strategy != name], extra], ignore_index=True)
    names = [n for n in names if n in set(scratch.strategy)]
    if not names:
        raise SystemExit(f"{scratch_folder} and {warm_folder} share no strategy "
                         f"({sorted(set(warm.strategy))} in the second); see --arm")
    seeds = sorted(set(scratch.seed) & set(warm.seed))
    print(f"paired seeds: {seeds}")
    both = pd.concat([scratch, warm.assign(strategy=warm.strategy + f" ({second})")],
                     ignore_index=True)
    both = both[both.seed.isin(seeds)]
    reached = both.groupby(["strategy", "seed"]).n_labelled.transform("max")
    unfinished = both[reached < both.n_labelled.max()][["strategy", "seed"]].drop_duplicates()
    if len(unfinished):  # a run still going: its last round is not the final budget
        print("left out, not at the final budget yet: "
              + ", ".join(f"{r.strategy} seed {r.seed}" for r in unfinished.itertuples()))
        both = both[reached == both.n_labelled.max()]
        every = set.intersection(*(set(g.seed) for _, g in both.groupby("strategy")))
        both = both[both.seed.isin(every)]  # the means over the same seeds on both sides
        print(f"seeds every arm finished: {sorted(every)}")
    final = both[both.n_labelled == both.n_labelled.max()]
    print(final.groupby("strategy")[["accuracy", "attention_roi_auc"]]
          .agg(["mean", "std"]).round(3))
    print(learning_curve_area(both).groupby("strategy")["alc"].mean().round(3))
    print(f"chance roi_auc: {both.chance_roi_auc.mean():.3f}")
    for name in names:
        for summary in ("final", "alc"):
            table = paired_comparison(both, reference=name, summary=summary)
            print(f"{name}: {second} - {first} ({summary}): "
                  + _cell(table.set_index("strategy").loc[f"{name} ({second})"]))
        per_seed = final.pivot_table(index="seed", columns="strategy", values="accuracy")
        diff = (per_seed[f"{name} ({second})"] - per_seed[name]).dropna()
        print(f"{name}: {second} - {first} per seed (final, points): "
              + ", ".join(f"{100 * d:+.1f}" for d in diff))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scratch")
    p.add_argument("warm")
    p.add_argument("--arm", action="append", default=[], nargs=3,
                   metavar=("WARM_NAME", "FOLDER", "SCRATCH_NAME"),
                   help="take WARM_NAME's from-scratch reference from FOLDER's SCRATCH_NAME")
    p.add_argument("--names", nargs=2, default=("scratch", "warm"), metavar=("A", "B"),
                   help="what to call the two folders in the printout (default: scratch warm)")
    args = p.parse_args()
    main(args.scratch, args.warm, args.arm, tuple(args.names))
