"""Markdown summary of a results folder."""

import ast
import json
from pathlib import Path

import numpy as np

from ..roi_loss import describe_roi_training
from ._plots import METRIC_LABELS, plot_gradcam_grid, plot_learning_curves
from ._run import ATTENTION_METRICS, load_results
from ._stats import learning_curve_area, paired_comparison

__all__ = ["attention_sentences", "balance_sentence", "bottom_line", "comparison_sentences",
           "degenerate_runs", "plain_sentences", "summary_table", "verdict_table",
           "without_roi_sentence", "write_report"]


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


#: A model with blank (all-zero) Grad-CAM maps for at least this share of the test images
#: is pointed out at every budget where it happens.
BLANK_MAP_NOTE = 0.1


def _metric_words(metric):
    """A metric's name inside a sentence: 'balanced accuracy', 'accuracy', 'macro F1'."""
    return METRIC_LABELS.get(metric, metric).replace("test ", "")


def _final(results):
    """The rows of the final budget."""
    return results[results["n_labelled"] == results["n_labelled"].max()]


def _who(part, results, n):
    """``(count, total, '3 of the 10 models (`random` seeds 0, 2; ...)')`` for the runs of
    ``part`` at ``n`` labels."""
    strategies = list(dict.fromkeys(results["strategy"]))
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
    return count, total, f"{count} of the {total} models ({who})"


def _batch_shares(results):
    """Per queried round: the share of its queries without an expert ROI (NaN where the
    results predate the column)."""
    if "queried_without_roi" not in results:
        return None
    results = results.sort_values(["strategy", "seed", "n_labelled"])
    batch = results.groupby(["strategy", "seed"], sort=False)["n_labelled"].diff()
    return results.assign(batch=batch, share=results["queried_without_roi"] / batch)


def degenerate_runs(results):
    """Plain-words notes on rounds whose numbers mean less than they seem.

    A model that predicts one class for the whole test split gives an accuracy
    that is that class's share (a note per number of labels, naming the models).
    Blank (all-zero) Grad-CAM maps for a tenth or more of the test images make
    attention numbers describe blank maps: one note lists every budget where a
    model had them, the final one included, with the largest share. A batch of
    which more than half had no expert ROI (an empty or missing mask), though
    such images are a minority of the pool, was chosen without the attention
    half of the dual criterion: a note per number of labels.
    """
    notes = []
    if "n_predicted_classes" in results:
        for n, part in results[results["n_predicted_classes"] <= 1].groupby("n_labelled"):
            count, _, who = _who(part, results, n)
            notes.append(f"At {n} labels {who} still predict{'s' * (count == 1)} one class "
                         "for every test image, so accuracy there is that class's share of "
                         "the test set, not learning.")
    if "blank_map_fraction" in results:
        bad = results[results["blank_map_fraction"] >= BLANK_MAP_NOTE]
        last = results["n_labelled"].max()
        where = []
        for n, part in bad.groupby("n_labelled"):
            count, total, who = _who(part, results, n)
            if n != last:  # the models are named at the final budget only
                who = f"{count} of {total}"
            where.append(f"{'at the final budget, ' * bool(n == last)}{n} labels: {who}, up to "
                         f"{part['blank_map_fraction'].max():.0%}")
        if where:
            notes.append(f"Blank (all-zero) Grad-CAM maps for {BLANK_MAP_NOTE:.0%} or more of "
                         "the test images, so attention numbers there partly describe blank "
                         "maps: " + "; ".join(where) + ".")
    shares = _batch_shares(results)
    if shares is not None:
        minority = shares["pool_without_roi"] < 0.5
        bad = shares[minority & (shares["share"] > 0.5)]
        for n, part in bad.groupby("n_labelled"):
            _, _, who = _who(part, results, n)
            notes.append(f"At {n} labels {who} chose more than half of the round's batch "
                         "among images without an ROI (an empty or missing mask, like a "
                         "normal image's), whose attention cannot be judged, though they are "
                         f"{part['pool_without_roi'].mean():.0%} of the pool.")
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
    (the interval excludes 0, from at least ``min_seeds`` seeds, and from
    :data:`RANK_TEST_SEEDS` seeds on Wilcoxon's signed-rank test agrees at the 5 %
    level) or not, and why.

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
    budget = int(results["n_labelled"].max())
    unit = ("accuracy points" if metric == "accuracy" else
            f"points of {_metric_words(metric)}")
    learnt = _learnt(results)
    other_metric = _beside(results, metric)
    out = []
    for strategy, reference in pairs:
        who, other = _name(names, strategy), _name(names, reference)
        if not (learnt.get(strategy, True) or learnt.get(reference, True)):
            sentence = (f"at {budget} labels neither {who} nor {other} learnt anything: each "
                        "of their models predicted one class for every test image, so their "
                        "accuracies are that class's share, not a tie.")
            out.append(sentence[0].upper() + sentence[1:])
            continue
        table = paired_comparison(results, metric, reference, summary="final",
                                  min_seeds=min_seeds).set_index("strategy")
        row = table.loc[strategy]
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
        elif rank_test_disagrees(row):  # the interval alone excludes 0
            verdict = ("suggestive, not a verdict: the interval excludes 0 but the signed-rank "
                       f"test does not agree (Wilcoxon p {row['p_wilcoxon']:.2f})")
        elif row["verdict"] in ("better", "worse"):
            verdict = "a verdict, as the interval excludes 0" + (
                f" and the signed-rank test agrees (Wilcoxon p {row['p_wilcoxon']:.3f})"
                if n >= RANK_TEST_SEEDS else "")
        else:
            verdict = "not a verdict: the interval includes 0, so this may be chance"
        sentence = f"At {budget} labels {who} {verb}{interval}: {verdict}"
        if other_metric:
            sentence += "; " + _difference_words(results, other_metric, strategy, reference,
                                                 min_seeds)
        out.append(sentence[0].upper() + sentence[1:] + ".")
    return out


#: From this many paired seeds the two-sided signed-rank test can reach p < 0.05 (6 seeds:
#: 2/64); from then on a verdict also needs it to agree with the bootstrap interval, which
#: alone is too ready to exclude 0 with 6-10 seeds of mixed signs.
RANK_TEST_SEEDS = 6


def rank_test_disagrees(row):
    """Whether a paired-comparison row's interval excludes 0 while Wilcoxon's signed-rank
    test, with seeds enough to reach p < 0.05, does not reject."""
    return (int(row["n_seeds"]) >= RANK_TEST_SEEDS and row["verdict"] in ("better", "worse")
            and not row["p_wilcoxon"] < 0.05)


#: A test split whose largest class has this many times the images of its smallest is
#: unequal enough for the report to put balanced accuracy beside accuracy.
UNEQUAL_CLASSES = 1.5


def unequal_classes(results):
    """Whether the test split's classes are of unequal size (False where the results
    predate the record)."""
    return ("test_class_ratio" in results
            and bool((results["test_class_ratio"] >= UNEQUAL_CLASSES).any()))


def _beside(results, metric):
    """The other of accuracy and balanced accuracy, said beside ``metric`` when the test
    split's classes are unequal; else None."""
    pair = {"accuracy": "balanced_accuracy", "balanced_accuracy": "accuracy"}
    other = pair.get(metric)
    return other if other in results and unequal_classes(results) else None


def _difference_words(results, metric, strategy, reference, min_seeds):
    """'balanced accuracy -3.2 points [-5.1, -1.0]' for ``strategy`` - ``reference``."""
    row = paired_comparison(results, metric, reference, summary="final",
                            min_seeds=min_seeds).set_index("strategy").loc[strategy]
    words = f"{_metric_words(metric)} {100 * row['mean_difference']:+.1f} points"
    if not np.isnan(row["ci_low"]):
        words += f" [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}]"
    return words


def _learnt(results):
    """Strategy -> whether any of its models predicts more than one class at the final
    budget (True where the results do not say)."""
    final = _final(results)
    if "n_predicted_classes" not in final:
        return {}
    return (final.groupby("strategy", sort=False)["n_predicted_classes"].max() > 1).to_dict()


def _name(names, strategy):
    return (names or {}).get(strategy, f"`{strategy}`")


def _listing(words):
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def bottom_line(results, metric="accuracy", names=None, min_seeds=5):
    """The run's answer in one sentence: which arm did best at the final budget, and
    whether that is a verdict (the 95 % interval of its paired difference from each
    other arm excludes 0, and from 6 seeds on the signed-rank test agrees), or that
    nothing was learnt.

    Returns
    -------
    str
    """
    budget = int(results["n_labelled"].max())
    final = results[results["n_labelled"] == budget]
    label = METRIC_LABELS.get(metric, metric).lower()
    learnt = _learnt(results)
    if learnt and not any(learnt.values()):
        return (f"Bottom line: nothing was learnt. At {budget} labels every model of every arm "
                "predicted one class for every test image, so the accuracies are that class's "
                "share of the test split, not a comparison of strategies.")
    means = final.groupby("strategy", sort=False)[metric].mean()
    candidates = means[[learnt.get(s, True) for s in means.index]]
    best = candidates.idxmax()
    n_seeds = int(final[final["strategy"] == best]["seed"].nunique())
    other = _beside(results, metric)
    beside = ("" if other is None else
              f", {_metric_words(other)} "
              f"{final[final['strategy'] == best][other].mean():.3f}")
    head = (f"Bottom line: at {budget} labels {_name(names, best)} had the highest mean "
            f"{label} ({means[best]:.3f} over {n_seeds} seed{'s' * (n_seeds > 1)}{beside})")
    if len(means) == 1:
        return head + "; it ran alone, so there is nothing to compare it with."
    table = paired_comparison(results, metric, best, summary="final", min_seeds=min_seeds)
    agreed = ~table.apply(rank_test_disagrees, axis=1).astype(bool)
    beaten = table[(table["verdict"] == "worse") & agreed]["strategy"]
    seeds = int(table["n_seeds"].min())
    # with seeds enough for it, the signed-rank test must agree too (rank_test_disagrees)
    tested = seeds >= RANK_TEST_SEEDS
    if seeds < min_seeds:
        verdict = f"not a verdict: {seeds} seed(s) are too few (it takes {min_seeds})"
    elif len(beaten) == len(table):
        verdict = ("a verdict against every other arm (each 95 % interval of the paired "
                   "difference excludes 0" + (" and the signed-rank test agrees" * tested)
                   + ")")
    elif len(beaten):
        verdict = (f"a verdict against {_listing(_name(names, s) for s in beaten)} only; "
                   "against the others the 95 % interval of the paired difference includes "
                   "0" + (" or the signed-rank test does not agree" * tested)
                   + ", so the order among them may be chance")
    else:
        verdict = ("not a verdict: against every other arm the 95 % interval of the paired "
                   "difference includes 0" + (" or the signed-rank test does not agree" * tested)
                   + ", so the order may be chance")
    return f"{head}; {verdict}."


def _arm_trains_with_roi(config, name):
    """Whether arm ``name`` of a results folder trained with the ROI loss."""
    own = config["strategies"].get(name, {}).get("estimator_params") or {}
    params = {k: _literal(v) for k, v in dict(config.get("estimator_params", {}), **own).items()}
    return params.get("roi_loss") is not None


def attention_sentences(results, config, names=None, metric="attention_roi_auc"):
    """Per arm trained with the ROI loss: its attention at the final budget against the
    arms trained without it, beside the chance level.

    Returns
    -------
    list of str
    """
    if metric not in results or results[metric].isna().all():
        return []
    budget = int(results["n_labelled"].max())
    final = results[results["n_labelled"] == budget]
    means = final.groupby("strategy", sort=False)[metric].mean()
    chance_column = metric.replace("attention_", "chance_")
    chance = (f" (chance {results[chance_column].mean():.3f})" if chance_column in results
              else "")
    short = metric.replace("attention_", "")
    roi = [s for s in means.index if _arm_trains_with_roi(config, s)]
    plain = means.drop(roi)
    if not roi:
        return []
    if plain.empty:
        return [f"Every arm trained with the ROI loss: attention (test {short} of the "
                f"Grad-CAM against the ROI) at {budget} labels from {means.min():.3f} to "
                f"{means.max():.3f}{chance}."]
    others = (f"{plain.iloc[0]:.3f} for {_name(names, plain.index[0])}" if len(plain) == 1
              else f"{plain.min():.3f}-{plain.max():.3f} for the arms trained without it")
    out = []
    for s in roi:
        if means[s] > plain.max():
            how = "attended to the ROI more than any arm trained without the ROI loss"
        elif means[s] < plain.min():
            how = "attended to the ROI less than every arm trained without the ROI loss"
        else:
            how = "attended to the ROI no better than the arms trained without the ROI loss"
        sentence = (f"{_name(names, s)} {how}: test {short} of its Grad-CAM {means[s]:.3f} at "
                    f"{budget} labels against {others}{chance}.")
        out.append(sentence[0].upper() + sentence[1:])
    return out


def balance_sentence(results, names=None, gap=0.05):
    """A sentence when balanced accuracy lies ``gap`` or more below accuracy for some arms
    at the final budget (their models favour the larger classes); else None."""
    if "balanced_accuracy" not in results:
        return None
    final = _final(results)
    means = final.groupby("strategy", sort=False)[["accuracy", "balanced_accuracy"]].mean()
    low = means[means["accuracy"] - means["balanced_accuracy"] >= gap]
    if low.empty:
        return None
    which = _listing(f"{_name(names, s)} ({r['balanced_accuracy']:.3f} against "
                     f"{r['accuracy']:.3f})" for s, r in low.iterrows())
    return (f"Balanced accuracy (the mean of the per-class recalls) lies well below accuracy "
            f"for {which}: these models got the larger classes right and many images of the "
            "smaller ones wrong, so accuracy flatters them.")


def without_roi_sentence(results, names=None):
    """How often each arm queried images without an expert ROI (an empty or missing mask,
    like a normal image's), against their share of the pool; None when every pool image
    has an ROI (or none has, or the results predate the count)."""
    shares = _batch_shares(results)
    if shares is None or shares["share"].isna().all():
        return None
    pool = shares["pool_without_roi"].mean()
    if not 0 < pool < 1:
        return None
    queried = shares.dropna(subset=["share"]).groupby("strategy", sort=False)[
        ["queried_without_roi", "batch"]].sum()
    queried = queried.reindex([s for s in dict.fromkeys(results["strategy"]) if s in queried.index])
    shares = [f"{q['queried_without_roi'] / q['batch']:.0%} of "
              f"{'the queries' if k == 0 else 'those'} of {_name(names, s)}"
              for k, (s, q) in enumerate(queried.iterrows())]
    return (f"Images without an ROI (an empty or missing mask, like a normal image's) are "
            f"{pool:.0%} of the pool; after the initial set they made up {_listing(shares)}.")


def plain_sentences(results, config, comparisons=(), names=None, min_seeds=5,
                    metric="accuracy"):
    """The report's "In words": the bottom line (by ``metric``, the headline), then
    ``comparisons`` (sentences of :func:`comparison_sentences`), attention of the arms
    trained with the ROI loss, balanced accuracy where it lags accuracy, and how often
    images without an ROI were queried.

    Returns
    -------
    list of str
    """
    sentences = [bottom_line(results, metric, names, min_seeds), *comparisons,
                 *attention_sentences(results, config, names)]
    for extra in (balance_sentence(results, names), without_roi_sentence(results, names)):
        if extra:
            sentences.append(extra)
    return sentences


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
    p, verdict = row[f"p_wilcoxon_{suffix}"], row[f"verdict_{suffix}"]
    if rank_test_disagrees({"n_seeds": row["n_seeds"], "verdict": verdict, "p_wilcoxon": p}):
        verdict = f"suggestive ({verdict} by the interval only)"
    return f"{mean:+.3f}{ci}", "n/a" if np.isnan(p) else f"{p:.3f}", verdict


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
                "criterion ranked the pool as its missing_roi says (by default, with no ROI "
                "anywhere in the pool: by uncertainty alone); the labelled images' ROIs still "
                "trained the ROI loss.")
    words = ("Pool ROIs: predicted. No strategy saw an expert ROI of an unlabelled image: an "
             "ROI model trained at every round on the labelled images' ROIs drew them.")
    if "roi_model_dice" in results:
        final = _final(results)
        if final["roi_model_dice"].notna().any():
            words += (f" At the final budget it drew the test split's ROIs with Dice "
                      f"{final['roi_model_dice'].mean():.3f} and pixel roi_auc "
                      f"{final['roi_model_roi_auc'].mean():.3f} (chance 0.5), mean over runs.")
    return words


def write_report(out_dir, dataset=None, metrics=("accuracy", "attention_roi_auc"),
                 grid_strategies=None, reference="random", test_set=None, in_words=None,
                 headline="accuracy"):
    """Write ``report.md`` and PNGs (learning curves; Grad-CAM grid if ``dataset`` is given).

    The report states the data and protocol, warns about degenerate runs,
    tabulates each metric by number of labels, gives every attention metric
    beside its chance level, and, when ``reference`` is one of the
    strategies, a paired verdict per strategy (better / worse / no detectable
    difference, from the 95 % bootstrap interval of the per-seed difference)
    at the final budget and by area under the learning curve.

    ``in_words``: the sentences put at the top of the report, under "In words"
    (default: :func:`plain_sentences` without pairwise comparisons; the ``xal``
    command passes them with its comparisons).

    ``headline``: the metric of the verdicts ("accuracy" or "balanced_accuracy").

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
    groups = {}  # the arms that train alike, in one clause
    for name, spec in config["strategies"].items():
        groups.setdefault(_training(params, spec.get("estimator_params")), []).append(name)
    if len(groups) == 1:
        lines += [f"Training: every arm with {next(iter(groups))}."]
    else:
        lines += ["Training: " + "; ".join(
            f"{_listing(f'`{n}`' for n in arms)} with {words}"
            for words, arms in groups.items()) + "."]
    warm = config.get("pretrain")
    if warm:
        lines[-1] += (f" Every fit starts from a self-supervised warm start: "
                      f"{warm.get('method', 'simclr')}, {warm.get('epochs', 100)} epochs on each "
                      "seed's pool images (no labels, no test images; `pretrain/`).")
    lines += ["", pool_rois_sentence(config, results), ""]
    note = config.get("extra", {}).get("note")
    if note:
        lines += [note, ""]
    if in_words is None:
        in_words = plain_sentences(results, config, metric=headline)
    if in_words:
        lines += ["## In words", ""] + [f"- {w}" for w in in_words] + [""]
    warnings = degenerate_runs(results)
    if warnings:
        lines += ["## What to keep in mind when reading these numbers", ""] \
            + [f"- {w}" for w in warnings] + [""]
    strategies = list(dict.fromkeys(results["strategy"]))
    if reference in strategies and len(strategies) > 1:
        word = _metric_words(headline)
        lines += [f"## Verdicts against `{reference}` (paired by seed)", "",
                  f"Difference in {word} (strategy - reference), mean over seeds with a 95 % "
                  "bootstrap interval, at the final budget and as the normalised area under "
                  f"the learning curve (ALC: the average {word} over the whole budget). "
                  "The verdict comes from the interval: 'better' or 'worse' only when it "
                  "excludes 0; from 6 seeds on also only when the Wilcoxon signed-rank p "
                  "(beside) is below 0.05, else 'suggestive'. With few seeds read "
                  "'better' and 'worse' as suggestive: a percentile bootstrap of 5 values "
                  "gives intervals narrower than their nominal 95 %, and with 5 seeds the "
                  "smallest possible two-sided Wilcoxon p is 0.0625.", "",
                  "| strategy | seeds | final: difference | p | verdict | ALC: difference "
                  "| p | verdict |", "|" + " --- |" * 8]
        for _, row in verdict_table(results, headline, reference).iterrows():
            cells = [row["strategy"], str(row["n_seeds"]), *_fmt_diff(row, "final"),
                     *_fmt_diff(row, "alc")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        alc = learning_curve_area(results, headline).groupby("strategy", sort=False)["alc"]
        lines += [f"ALC of {word}, mean ± std over seeds: " + "; ".join(
            f"`{n}` {m:.3f} ± {sd:.3f}" if not np.isnan(sd) else f"`{n}` {m:.3f}"
            for n, m, sd in zip(alc.mean().index, alc.mean(), alc.std())) + ".", ""]
    for metric in metrics:
        lines += [f"## {METRIC_LABELS.get(metric, metric)} (mean ± std over seeds)", "",
                  _markdown(summary_table(results, metric), "labels"), ""]
    final = _final(results)
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
