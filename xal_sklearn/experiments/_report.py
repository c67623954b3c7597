"""Markdown summary of a results folder."""

import ast
import json
from pathlib import Path

import numpy as np

from ..roi_loss import describe_roi_training
from ._plots import METRIC_LABELS, plot_gradcam_grid, plot_learning_curves
from ._run import ATTENTION_METRICS, load_results
from ._stats import learning_curve_area, paired_comparison

__all__ = ["comparison_sentences", "degenerate_runs", "summary_table", "verdict_table",
           "write_report"]


def summary_table(results, metric="accuracy", fmt="{:.3f}"):
    """Metric at each number of labels (rows) per strategy (columns): mean ± std over seeds."""
    stats = results.groupby(["n_labelled", "strategy"], sort=False)[metric].agg(["mean", "std"])
    cells = stats.apply(lambda r: fmt.format(r["mean"]) + (
        "" if r.isna()["std"] else " ± " + fmt.format(r["std"])), axis=1)
    table = cells.unstack("strategy")
    return table[list(dict.fromkeys(results["strategy"]))]


def _markdown(table, index_name):
    header = f"| {index_name} | " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + " --- |" * (len(table.columns) + 1)
    body = [f"| {idx} | " + " | ".join(str(v) for v in row) + " |"
            for idx, row in zip(table.index, table.values)]
    return "\n".join([header, rule, *body])


def degenerate_runs(results):
    """Plain-words notes on rounds whose models are degenerate, one per number of labels.

    A model that predicts one class for the whole test split, or whose Grad-CAM
    maps are all zero for most test images, produces numbers that look like
    results but mean little. Each note says at how many labels it happened, to
    how many of the models trained there, and which (every strategy, or the
    strategies and seeds).
    """
    notes = []
    checks = [("n_predicted_classes", lambda v: v <= 1,
               "still predict{s} one class for every test image, so accuracy there is that "
               "class's share of the test set, not learning"),
              ("blank_map_fraction", lambda v: v > 0.5,
               "give{s} blank (all-zero) Grad-CAM maps for most test images, so attention "
               "numbers there describe blank maps")]
    strategies = list(dict.fromkeys(results["strategy"]))
    for column, is_bad, what in checks:
        if column not in results:
            continue
        bad = results[is_bad(results[column])]
        for n, part in bad.groupby("n_labelled"):
            total = int((results["n_labelled"] == n).sum())
            runs = part[["strategy", "seed"]].drop_duplicates()
            seeds = runs.groupby("strategy", sort=False)["seed"].apply(sorted)
            count = len(runs)
            if count == total:
                who = "all of them"
            elif len(seeds) == len(strategies) > 1:
                who = "some of every strategy"
            else:
                who = "; ".join(f"`{name}` seed{'s' * (len(s) > 1)} {', '.join(map(str, s))}"
                                for name, s in seeds.items())
            notes.append(f"At {n} labels {count} of the {total} models ({who}) "
                         + what.format(s="s" if count == 1 else "") + ".")
    return notes


def verdict_table(results, metric="accuracy", reference="random"):
    """Paired comparisons against ``reference`` at the final budget and by ALC, as one table."""
    parts = [paired_comparison(results, metric, reference, summary=s) for s in ("final", "alc")]
    table = parts[0].merge(parts[1], on=["strategy", "reference", "n_seeds"],
                           suffixes=("_final", "_alc"))
    return table


def comparison_sentences(results, pairs, metric="accuracy", names=None, min_seeds=5):
    """One plain sentence per ``(strategy, reference)`` pair, made from the numbers.

    Each says who won at the final budget and by how much, with the 95 %
    bootstrap interval of the per-seed difference, and whether that is a verdict
    (the interval excludes 0, from at least ``min_seeds`` seeds) or not, and why.

    Parameters
    ----------
    results : pandas.DataFrame
        As from :func:`run_experiment`.
    pairs : sequence of (str, str)
    metric : str
    names : dict, optional
        Strategy name -> words (default: the name in backticks).
    min_seeds : int

    Returns
    -------
    list of str
    """
    names = names or {}
    budget = int(results["n_labelled"].max())
    unit = "accuracy points" if metric == "accuracy" else f"points of {metric}"
    out = []
    for strategy, reference in pairs:
        table = paired_comparison(results, metric, reference, summary="final",
                                  min_seeds=min_seeds).set_index("strategy")
        row = table.loc[strategy]
        who, other = names.get(strategy, f"`{strategy}`"), names.get(reference, f"`{reference}`")
        diff, lo, hi, n = (row["mean_difference"], row["ci_low"], row["ci_high"],
                           int(row["n_seeds"]))
        points = round(100 * diff, 1)  # as printed: "by 0.0 points" is a tie
        if points > 0:
            verb = f"beat {other} by {points:.1f} {unit}"
        elif points < 0:
            verb = f"lost to {other} by {-points:.1f} {unit}"
        else:
            verb = f"tied with {other}"
        interval = ("" if np.isnan(lo) else
                    f" (95 % interval of the difference {100 * lo:+.1f} to {100 * hi:+.1f} "
                    f"over {n} seeds)")
        if n < min_seeds:
            verdict = f"not a verdict: {n} seed(s) are too few (it takes {min_seeds})"
        elif row["verdict"] in ("better", "worse"):
            verdict = "a verdict, as the interval excludes 0"
        else:
            verdict = "not a verdict: the interval includes 0, so this may be chance"
        sentence = f"At {budget} labels {who} {verb}{interval}: {verdict}."
        out.append(sentence[0].upper() + sentence[1:])
    return out


def _literal(value):
    """A parameter as config.json records it (its repr) back to the value, where it can."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _training(params, own=None):
    """'cross-entropy only' or 'cross-entropy + the `rank` attention loss ...', and the
    strategy's ``own`` estimator parameters that are not the ROI loss's."""
    params = {k: _literal(v) for k, v in dict(params, **(own or {})).items()}
    if params.get("roi_loss") is None:
        words = "cross-entropy only"
    else:
        words = "cross-entropy + " + describe_roi_training(params)
    other = {k: v for k, v in (own or {}).items() if not k.startswith("roi_")}
    if other:
        words += ", with " + ", ".join(f"`{k}={v}`" for k, v in sorted(other.items()))
    return words


def _fmt_diff(row, suffix):
    mean, lo, hi = (row[f"{k}_{suffix}"] for k in ("mean_difference", "ci_low", "ci_high"))
    ci = "" if np.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]"
    p = row[f"p_wilcoxon_{suffix}"]
    return f"{mean:+.3f}{ci}", "n/a" if np.isnan(p) else f"{p:.3f}", row[f"verdict_{suffix}"]


def pool_rois_sentence(config, results):
    """Where the strategies' ROIs of unlabelled images came from, in words (and, with an
    ROI model, how well it drew the test split's at the final budget)."""
    setting = config.get("pool_rois", "given")
    if setting == "given":
        return ("Pool ROIs: given. Strategies that compare attention with the ROI read the "
                "data set's expert mask of every unlabelled pool image: the retrospective "
                "setting of the reference paper, an oracle in a real campaign, where nobody "
                "has drawn the pool's ROIs.")
    if setting == "none":
        return ("Pool ROIs: none. No strategy saw an ROI of an unlabelled image, so the dual "
                "criterion ranked the pool as its missing_roi says (by default: uncertainty); "
                "the labelled images' ROIs still trained the ROI loss.")
    words = ("Pool ROIs: predicted. No strategy saw an expert ROI of an unlabelled image: an "
             "ROI model trained at every round on the labelled images' ROIs drew them.")
    if "roi_model_dice" in results:
        final = results[results["n_labelled"] == results["n_labelled"].max()]
        if final["roi_model_dice"].notna().any():
            words += (f" At the final budget it drew the test split's ROIs with Dice "
                      f"{final['roi_model_dice'].mean():.3f} and pixel roi_auc "
                      f"{final['roi_model_roi_auc'].mean():.3f} (chance 0.5), mean over runs.")
    return words


def write_report(out_dir, dataset=None, metrics=("accuracy", "attention_roi_auc"),
                 grid_strategies=None, reference="random", test_set=None, in_words=None):
    """Write ``report.md`` and PNGs (learning curves; Grad-CAM grid if ``dataset`` is given).

    The report states the data and protocol, warns about degenerate runs,
    tabulates each metric by number of labels, gives every attention metric
    beside its chance level, and, when ``reference`` is one of the
    strategies, a paired verdict per strategy (better / worse / no detectable
    difference, from the 95 % bootstrap interval of the per-seed difference)
    at the final budget and by area under the learning curve.

    ``in_words``: sentences (see :func:`comparison_sentences`) put at the top of
    the report, under "In words".

    ``test_set`` is the experiment's explicit test set, if it had one: the
    Grad-CAM grid then shows test images from it (without it, such a grid
    shows pool images nobody queried, and says so).

    Returns the path of ``report.md``.
    """
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    metrics = [m for m in metrics if m in results]
    plot_learning_curves(results, metrics, path=out_dir / "learning_curves.png")
    test = config.get("test_set")
    split = (f"an explicit test set of {test['n_samples']} images (the whole dataset is the pool)"
             if test else f"test split: {config['test_size']:.0%} of the groups")
    lines = [
        "# Active-learning experiment",
        "",
        f"Data: {config.get('extra', {}).get('description', 'dataset')} "
        f"({config['dataset']['n_samples']} samples, images "
        f"{'x'.join(map(str, config['dataset']['image_shape']))}, "
        f"{config['n_classes']} classes); {split}; "
        f"{config['initial_size']} initial labels, {config['query_size']} per round, budget "
        f"{config['budget']}; seeds {config['seeds']}.",
        "",
        "Strategies: " + "; ".join(
            f"`{n}` = {s['function'].rsplit('.', 1)[-1]}"
            + (" (" + ", ".join(f"{k}={v}" for k, v in s["kwargs"].items()) + ")"
               if s["kwargs"] else "")
            for n, s in config["strategies"].items()) + ".",
        "",
    ]
    params = config.get("estimator_params", {})
    lines += ["Training: " + _training(params) + "."]
    for name, spec in config["strategies"].items():
        own = spec.get("estimator_params")
        if own:
            lines[-1] += f" `{name}`: {_training(params, own)}."
    warm = config.get("pretrain")
    if warm:
        lines[-1] += (f" Every fit starts from a self-supervised warm start: "
                      f"{warm.get('method', 'simclr')}, {warm.get('epochs', 100)} epochs on each "
                      "seed's pool images (no labels, no test images; `pretrain/`).")
    lines += ["", pool_rois_sentence(config, results), ""]
    note = config.get("extra", {}).get("note")
    if note:
        lines += [note, ""]
    if in_words:
        lines += ["## In words", ""] + [f"- {w}" for w in in_words] + [""]
    warnings = degenerate_runs(results)
    if warnings:
        lines += ["## What to keep in mind when reading these numbers", ""] \
            + [f"- {w}" for w in warnings] + [""]
    strategies = list(dict.fromkeys(results["strategy"]))
    if reference in strategies and len(strategies) > 1:
        lines += [f"## Verdicts against `{reference}` (paired by seed)", "",
                  "Difference in accuracy (strategy - reference), mean over seeds with a 95 % "
                  "bootstrap interval, at the final budget and as the normalised area under "
                  "the learning curve (ALC: the average accuracy over the whole budget). "
                  "The verdict comes from the interval: 'better' or 'worse' only when it "
                  "excludes 0. Wilcoxon signed-rank p-values beside. With few seeds read "
                  "'better' and 'worse' as suggestive: a percentile bootstrap of 5 values "
                  "gives intervals narrower than their nominal 95 %, and with 5 seeds the "
                  "smallest possible two-sided Wilcoxon p is 0.0625.", "",
                  "| strategy | seeds | final: difference | p | verdict | ALC: difference "
                  "| p | verdict |", "|" + " --- |" * 8]
        for _, row in verdict_table(results, "accuracy", reference).iterrows():
            cells = [row["strategy"], str(row["n_seeds"]), *_fmt_diff(row, "final"),
                     *_fmt_diff(row, "alc")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        alc = learning_curve_area(results, "accuracy").groupby("strategy", sort=False)["alc"]
        lines += ["ALC of accuracy, mean ± std over seeds: " + "; ".join(
            f"`{n}` {m:.3f} ± {sd:.3f}" if not np.isnan(sd) else f"`{n}` {m:.3f}"
            for n, m, sd in zip(alc.mean().index, alc.mean(), alc.std())) + ".", ""]
    for metric in metrics:
        lines += [f"## {METRIC_LABELS.get(metric, metric)} (mean ± std over seeds)", "",
                  _markdown(summary_table(results, metric), "labels"), ""]
    final = results[results["n_labelled"] == results["n_labelled"].max()]
    attention = [c for c in ATTENTION_METRICS if c in results]
    lines += ["## All metrics at the final budget (mean over seeds)", "",
              _markdown(final.groupby("strategy", sort=False)[
                  ["accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr"]]
                  .mean().round(3), "strategy"), ""]
    if attention:
        chance = {c: results[c.replace("attention_", "chance_")].mean() for c in attention
                  if c.replace("attention_", "chance_") in results}
        table = final.groupby("strategy", sort=False)[attention].mean().round(3)
        table.columns = [f"{c.replace('attention_', '')} (chance {chance[c]:.3f})"
                         if c in chance else c.replace("attention_", "") for c in attention]
        lines += ["Attention at the final budget: agreement of the predicted class's Grad-CAM "
                  "with the ROI over test images that have one, each beside its chance level "
                  "(random maps on the same attention grid).", "",
                  _markdown(table, "strategy"), ""]
    lines += ["![learning curves](learning_curves.png)", ""]
    if dataset is not None:
        names = list(config["strategies"])
        pair = tuple(grid_strategies or dict.fromkeys((names[0], names[-1])))
        plot_gradcam_grid(out_dir, dataset, pair, seed=config["seeds"][0],
                          path=out_dir / "gradcam_grid.png", test_set=test_set)
        shown = ("test images" if not test or test_set is not None else
                 "pool images that neither model was trained on (the explicit test set was "
                 "not available)")
        lines += [f"Grad-CAM of the final models of {' and '.join(f'`{n}`' for n in pair)} "
                  f"(seed {config['seeds'][0]}) on images each queried last, then on {shown}; "
                  "green: ROI.", "", "![Grad-CAM grid](gradcam_grid.png)", ""]
    versions = config.get("versions", {})
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
