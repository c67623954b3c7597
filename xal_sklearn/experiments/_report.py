"""Markdown summary of a results folder."""

import json
from pathlib import Path

from ._plots import METRIC_LABELS, plot_gradcam_grid, plot_learning_curves
from ._run import load_results

__all__ = ["summary_table", "write_report"]


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


def write_report(out_dir, dataset=None, metrics=("accuracy", "attention_dice"),
                 grid_strategies=None):
    """Write ``report.md`` and PNGs (learning curves; Grad-CAM grid if ``dataset`` is given).

    Returns the path of ``report.md``.
    """
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    plot_learning_curves(results, metrics, path=out_dir / "learning_curves.png")
    lines = [
        "# Active-learning experiment",
        "",
        f"Data: {config.get('extra', {}).get('description', 'dataset')} "
        f"({config['dataset']['n_samples']} samples, images "
        f"{'x'.join(map(str, config['dataset']['image_shape']))}, "
        f"{config['n_classes']} classes); test split: {config['test_size']:.0%} of the groups; "
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
    for metric in metrics:
        lines += [f"## {METRIC_LABELS.get(metric, metric)} (mean ± std over seeds)", "",
                  _markdown(summary_table(results, metric), "labels"), ""]
    final = results[results["n_labelled"] == results["n_labelled"].max()]
    lines += ["## All metrics at the final budget", "",
              _markdown(final.groupby("strategy", sort=False)[
                  ["accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr", "attention_dice"]]
                  .mean().round(3), "strategy"), "",
              "![learning curves](learning_curves.png)", ""]
    if dataset is not None:
        names = list(config["strategies"])
        pair = grid_strategies or (names[0], names[-1])
        plot_gradcam_grid(out_dir, dataset, pair, seed=config["seeds"][0],
                          path=out_dir / "gradcam_grid.png")
        lines += [f"Grad-CAM of the final models of `{pair[0]}` and `{pair[1]}` (seed "
                  f"{config['seeds'][0]}); green: ROI.", "", "![Grad-CAM grid](gradcam_grid.png)",
                  ""]
    versions = config.get("versions", {})
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
