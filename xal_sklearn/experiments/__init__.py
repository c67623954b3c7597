"""Active-learning simulations: learning curves, resumable runs, plots and reports."""

from ._plots import plot_gradcam_grid, plot_learning_curves
from ._report import (bottom_line, comparison_sentences, degenerate_runs, plain_sentences,
                      summary_table, verdict_table, write_report)
from ._run import (ATTENTION_METRICS, METRICS, RareClassWarning, ResultsFolderError, load_results,
                   run_experiment)
from ._stats import holm, learning_curve_area, paired_comparison

__all__ = ["ATTENTION_METRICS", "METRICS", "RareClassWarning", "ResultsFolderError", "bottom_line",
           "comparison_sentences", "degenerate_runs", "holm", "learning_curve_area", "load_results",
           "paired_comparison", "plain_sentences", "plot_gradcam_grid", "plot_learning_curves",
           "run_experiment", "summary_table", "verdict_table", "write_report"]
