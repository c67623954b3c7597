"""Statistics that support a verdict: learning-curve areas and paired comparisons over seeds."""

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["holm", "learning_curve_area", "paired_comparison"]


def learning_curve_area(results, metric="accuracy"):
    """Normalised area under the learning curve (ALC) per strategy and seed.

    The trapezoidal area of ``metric`` against the number of labels, divided by
    the range of labels, i.e. the metric's average level over the whole
    budget (same units as the metric). A strategy that gets good early scores
    higher than one that gets there only at the end.

    Returns
    -------
    pandas.DataFrame
        Columns ``strategy``, ``seed``, ``alc``.
    """
    rows = []
    for (name, seed), part in results.groupby(["strategy", "seed"], sort=False):
        part = part.sort_values("n_labelled")
        x, y = part["n_labelled"].to_numpy(float), part[metric].to_numpy(float)
        span = x[-1] - x[0]
        alc = float(np.trapezoid(y, x) / span) if span > 0 else float(y[-1])
        rows.append({"strategy": name, "seed": seed, "alc": alc})
    return pd.DataFrame(rows)


def _per_seed(results, metric, summary):
    if summary == "alc":
        return learning_curve_area(results, metric).pivot(index="seed", columns="strategy",
                                                           values="alc")
    if summary != "final":
        raise ValueError(f"summary must be 'final' or 'alc', got {summary!r}.")
    final = results[results["n_labelled"] == results.groupby(["strategy", "seed"])[
        "n_labelled"].transform("max")]
    return final.pivot_table(index="seed", columns="strategy", values=metric)


def paired_comparison(results, metric="accuracy", reference="random", summary="final",
                      confidence=0.95, n_resamples=10000, random_state=0, min_seeds=5):
    """Each strategy against ``reference``, paired by seed, with a verdict.

    The same seed means the same split and initial labelled set, so the
    per-seed differences remove most of the seed-to-seed spread.

    Parameters
    ----------
    results : pandas.DataFrame
        As from :func:`run_experiment`.
    metric : str
    reference : str
        Strategy to compare against; must be in ``results``.
    summary : {"final", "alc"}
        Compare the metric at the final budget, or the normalised area under
        the learning curve.
    confidence : float
    n_resamples : int
        Bootstrap resamples of the seeds (percentile interval).
    random_state : int
    min_seeds : int, default=5
        Fewer paired seeds give no verdict: a bootstrap of 2-4 values says little.

    Returns
    -------
    pandas.DataFrame
        One row per other strategy: ``n_seeds``, ``mean_difference``
        (strategy - reference), ``ci_low``, ``ci_high`` (bootstrap), ``p_wilcoxon``
        (two-sided signed-rank test; with 5 seeds it cannot go below 0.0625),
        and ``verdict``: "better" or "worse" when the whole interval lies on one
        side of 0, else "no detectable difference"; "too few seeds" below ``min_seeds``.
    """
    table = _per_seed(results, metric, summary)
    if reference not in table.columns:
        raise ValueError(f"Reference strategy {reference!r} is not in the results; "
                         f"strategies: {list(table.columns)}.")
    rows = []
    for name in [c for c in dict.fromkeys(results["strategy"]) if c != reference]:
        diff = (table[name] - table[reference]).dropna().to_numpy()
        row = {"strategy": name, "reference": reference, "summary": summary,
               "n_seeds": len(diff), "mean_difference": float(np.mean(diff)) if len(diff)
               else np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_wilcoxon": np.nan}
        if len(diff) >= 2 and np.ptp(diff) > 0:
            ci = stats.bootstrap((diff,), np.mean, confidence_level=confidence,
                                 n_resamples=n_resamples, method="percentile",
                                 random_state=random_state).confidence_interval
            row["ci_low"], row["ci_high"] = float(ci.low), float(ci.high)
        elif len(diff) >= 2:  # every seed gave the same difference
            row["ci_low"] = row["ci_high"] = float(diff[0])
        if len(diff) >= 2 and np.any(diff != 0):
            row["p_wilcoxon"] = float(stats.wilcoxon(diff).pvalue)
        if len(diff) < min_seeds:
            row["verdict"] = f"too few seeds for a verdict ({len(diff)} < {min_seeds})"
        elif row["ci_low"] > 0:
            row["verdict"] = "better"
        elif row["ci_high"] < 0:
            row["verdict"] = "worse"
        else:
            row["verdict"] = "no detectable difference"
        rows.append(row)
    # no other strategy (a one-strategy run): an empty table that still has the columns
    return pd.DataFrame(rows, columns=["strategy", "reference", "summary", "n_seeds",
                                       "mean_difference", "ci_low", "ci_high", "p_wilcoxon",
                                       "verdict"])


def holm(p_values):
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN).

    The i-th smallest of m p-values is multiplied by ``m - i`` (i from 0), then a
    running maximum keeps the order, capped at 1: reject where the adjusted p is
    below the level, and the family-wise error stays at that level.

    Parameters
    ----------
    p_values : array-like of float

    Returns
    -------
    ndarray of float, in the input's order
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out
