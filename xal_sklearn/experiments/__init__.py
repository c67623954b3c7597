"""Active-learning simulations: learning curves, resumable runs, plots and reports."""

from ._plots import plot_gradcam_grid, plot_learning_curves
from ._report import summary_table, write_report
from ._run import METRICS, load_results, run_experiment

__all__ = ["METRICS", "load_results", "plot_gradcam_grid", "plot_learning_curves",
           "run_experiment", "summary_table", "write_report"]
