"""Learning curves and Grad-CAM overlay grids."""

import json
from pathlib import Path

import numpy as np

from ..alignment import ALIGNMENT_METRICS

__all__ = ["plot_learning_curves", "plot_gradcam_grid"]

METRIC_LABELS = {"accuracy": "test accuracy", "balanced_accuracy": "balanced accuracy",
                 "macro_f1": "macro F1", "roc_auc_ovr": "ROC AUC (one-vs-rest)",
                 **{f"attention_{name}": f"attention {name} (Grad-CAM vs ROI)"
                    for name in ALIGNMENT_METRICS}}


def plot_learning_curves(results, metrics=("accuracy", "attention_roi_auc"), path=None,
                         dpi=100):
    """Mean (line) and min-max band over seeds of each metric against the number of labels.

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`run_experiment` / :func:`load_results`.
    metrics : sequence of str
    path : path-like, optional
        Save the figure there (PNG).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False,
                             dpi=dpi)
    for ax, metric in zip(axes[0], metrics):
        for name, part in results.groupby("strategy", sort=False):
            stats = part.groupby("n_labelled")[metric].agg(["mean", "min", "max", "count"])
            line, = ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=name)
            if stats["count"].max() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2,
                                color=line.get_color())
        chance = metric.replace("attention_", "chance_")
        if metric.startswith("attention_") and chance in results:
            ax.axhline(results[chance].mean(), color="gray", ls="--", lw=1, label="chance")
        ax.set_xlabel("labelled samples")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    seeds = results["seed"].nunique()
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Learning curves (mean and min-max over {seeds} seed{'s' * (seeds > 1)})")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def _final_estimator(out_dir, strategy, seed, estimator):
    from .._persist import resolve_folder
    from ..learner import ActiveLearner
    from ._run import _checkpoint_path, read_checkpoint

    ckpt = _checkpoint_path(out_dir, strategy, seed)
    net = ActiveLearner.load_estimator(resolve_folder(ckpt) / "learner", estimator)
    return net, read_checkpoint(ckpt)


def plot_gradcam_grid(out_dir, dataset, strategies, seed=0, n_samples=4, path=None, dpi=100,
                      random_state=0, estimator=None, test_set=None):
    """Grad-CAM overlays of one or two strategies' final models, side by side.

    Rows: the last samples each strategy queried, then test samples (the
    same for all). Columns: the image with its ROI contour, and the
    Grad-CAM of each model's predicted class over it. Each row's title says
    where its image comes from.

    Parameters
    ----------
    out_dir : path-like
        Results folder of :func:`run_experiment` (its checkpoints hold the models).
    dataset : Bunch
        The experiment's dataset.
    strategies : (str,) or (str, str)
    seed : int
    n_samples : int
        Rows per group.
    path : path-like, optional
        Save the figure there (PNG).
    estimator : skorch network, optional
        Unfitted template of the experiment's network, into which the saved weights
        are loaded; default: rebuilt from ``config.json`` (a ``CNNClassifier``).
    test_set : Bunch, optional
        The explicit test set of an experiment run with one (``X``, ``y``,
        ``roi_masks``, ``roi_available``): test rows are drawn from it. Without
        it such an experiment's grid shows pool images that no model was
        trained on, titled "pool, unlabelled".
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .. import gradcam
    from ..datasets import group_train_test_split
    from ._run import _masks

    strategies = tuple(strategies)
    if len(strategies) not in (1, 2) or len(set(strategies)) != len(strategies):
        raise ValueError(f"plot_gradcam_grid shows one or two distinct strategies, got "
                         f"{strategies!r}.")

    from ._run import estimator_template

    cfg = json.loads((Path(out_dir) / "config.json").read_text())
    models, queried, labelled = {}, {}, set()
    for name in strategies:
        template = estimator if estimator is not None else estimator_template(cfg, name)
        models[name], progress = _final_estimator(out_dir, name, seed, template)
        queried[name] = json.loads(progress["rows"][-1]["queried"])[:n_samples]
        labelled.update(progress["labelled"])
    rng = np.random.RandomState(random_state)
    if cfg.get("test_set") is None:
        _, test = group_train_test_split(dataset["groups"], cfg["test_size"], random_state=seed)
        test_group = ("test", dataset, rng.choice(test, min(n_samples, len(test)),
                                                  replace=False))
    elif test_set is not None:
        n_test = len(test_set["y"])
        test_group = ("test", test_set, rng.choice(n_test, min(n_samples, n_test),
                                                   replace=False))
    else:  # the test set is not part of the dataset: pool images no model was trained on
        unseen = np.setdiff1d(np.arange(len(dataset["y"])), sorted(labelled))
        test_group = ("pool, unlabelled", dataset,
                      rng.choice(unseen, min(n_samples, len(unseen)), replace=False))
    groups = [(f"queried by {name}", dataset, queried[name]) for name in strategies]
    groups.append(test_group)
    total = sum(len(g) for _, _, g in groups)
    n_cols = 1 + len(strategies)
    fig, axes = plt.subplots(total, n_cols, figsize=(2.5 * n_cols, 2.5 * total), squeeze=False,
                             dpi=dpi)
    names = np.asarray(dataset.get("target_names", []))
    r = 0
    for title, source, idx in groups:
        if not len(idx):
            continue
        idx = np.asarray(idx)
        X, masks = source["X"][idx], _masks(source, idx)
        maps = {name: gradcam(models[name], X, progress=False) for name in strategies}
        preds = {name: models[name].predict(X) for name in strategies}
        for j in range(len(idx)):
            img = X[j].mean(0)
            label = source["y"][idx[j]]
            axes[r, 0].imshow(img, cmap="gray")
            if masks[j].any():
                axes[r, 0].contour(masks[j], levels=[0.5], colors="lime", linewidths=1)
            axes[r, 0].set_title(f"{title}: #{idx[j]}, "
                                 f"{names[label] if len(names) else label}", fontsize=7)
            for c, name in enumerate(strategies, start=1):
                axes[r, c].imshow(img, cmap="gray")
                axes[r, c].imshow(maps[name][j], cmap="jet", alpha=0.45, vmin=0, vmax=1)
                if masks[j].any():
                    axes[r, c].contour(masks[j], levels=[0.5], colors="lime", linewidths=1)
                pred = preds[name][j]
                axes[r, c].set_title(f"{name}: predicts {names[pred] if len(names) else pred}",
                                     fontsize=7)
            r += 1
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
