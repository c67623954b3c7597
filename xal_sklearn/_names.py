"""Names and defaults of the package's registries, importable without torch.

The ``xal`` command lists these in its help and checks its arguments against them
before anything heavy is imported (``xal --help`` must not wait for torch). Each name
belongs to the module that implements it and is re-exported from there
(``roi_loss.ROI_LOSSES``, ``alignment.ALIGNMENT_METRICS``' keys, ...); this module only
holds the values, so that they are written once.
"""

__all__ = ["ALIGNMENT_NAMES", "BACKEND_TOKEN_ENV", "DEFAULT_CONTEXT_CHANNELS",
           "DEFAULT_N_FILTERS", "DEFAULT_PRETRAIN_EPOCHS", "DEFAULT_RETRAIN_EVERY",
           "DEFAULT_ROI_LOSS", "DEFAULT_TOP", "HEAD_INITS", "PRECISION_NAMES",
           "PRETRAIN_METHODS", "RECIPES", "RESIZE_MODES", "ROI_BALANCES", "ROI_CONFLICTS",
           "ROI_DEFAULTS", "ROI_LOSSES", "UNCERTAINTY_MEASURES", "context_split"]

#: ``xal campaign serve`` retrains after this many new, changed or deleted labels.
DEFAULT_RETRAIN_EVERY = 10

#: Pool images a live campaign's strategy orders itself; the rest follow by uncertainty.
DEFAULT_TOP = 50

#: The environment variable the campaign server's token may come from.
BACKEND_TOKEN_ENV = "XAL_BACKEND_TOKEN"

#: The attention losses of :class:`~xal_sklearn.CNNClassifier` (see :mod:`~xal_sklearn.roi_loss`).
ROI_LOSSES = ("dice", "outside", "rank", "counterexample", "rrr")

#: The loss to use when none is named (the ``+roi`` arms of ``xal run``, the demo); chosen
#: on validation groups of the brain-MRI training split (docs/results.md).
DEFAULT_ROI_LOSS = "rank"

#: How ``roi_weight`` weighs the attention term (see :mod:`~xal_sklearn.roi_loss`).
ROI_BALANCES = ("ce", "fixed")

#: How the attention term's gradient meets the cross-entropy's (see :mod:`~xal_sklearn.roi_loss`).
ROI_CONFLICTS = ("separate", "project", "sum")

#: :class:`~xal_sklearn.CNNClassifier`'s defaults for the attention-loss settings, chosen
#: with ``"rank"`` on validation groups of the brain-MRI training split (docs/results.md);
#: the CLI and campaigns fill the settings a user leaves out from here.
ROI_DEFAULTS = {"roi_weight": 1.0, "roi_balance": "ce", "roi_dilation": 2, "roi_warmup": 0.4,
                "roi_conflict": "separate"}

#: The keys of :data:`xal_sklearn.alignment.ALIGNMENT_METRICS`, in its order.
ALIGNMENT_NAMES = ("soft_dice", "dice", "iou", "pointing_game", "roi_auc", "mass_in_roi")

#: Uncertainty measures of :mod:`xal_sklearn.uncertainty`.
UNCERTAINTY_MEASURES = ("entropy", "margin", "least_confident")

#: Training precisions of :class:`~xal_sklearn.CNNClassifier`.
PRECISION_NAMES = ("float32", "bf16-mixed")

#: How ``CNNClassifier`` starts the last linear layer of each fit.
HEAD_INITS = ("random", "probe")

#: How an image of another aspect ratio meets the model's size (see
#: :func:`~xal_sklearn.datasets.resize_image`).
RESIZE_MODES = ("stretch", "pad", "crop")

#: Self-supervised warm starts of :func:`~xal_sklearn.pretrain_encoder`.
PRETRAIN_METHODS = ("simclr", "byol")

#: Enough on our brain-MRI pool (docs/results.md), and under 10 minutes at 64 px on 2 cores.
DEFAULT_PRETRAIN_EPOCHS = 50

#: :class:`~xal_sklearn.SmallCNN`'s default ``context_channels``: a quarter of the last
#: block (16 of 64). It was 0 before the branch existed; records of results folders and
#: campaigns name it, so a record without it is the old network.
DEFAULT_CONTEXT_CHANNELS = 0.25

#: :class:`~xal_sklearn.SmallCNN`'s default ``n_filters`` (the widths of its blocks); the
#: CLI and campaigns, which build it with these, check ``context_channels`` against the last.
DEFAULT_N_FILTERS = (16, 32, 64)


#: ``--recipe`` of ``xal run`` and ``xal campaign init``: what to run on a new data set,
#: read off the two-set leaderboard (docs/results.md, "What should I run?"). A warm start
#: (SimCLR on the pool, each head from a linear probe) was the one lever that moved every
#: arm; on top of it the strategies were within noise of one another and the ROI loss cost
#: no accuracy while it raised attention; margin sampling ranked near the top from scratch
#: and needs no ROIs. Each maps an option (argparse's name) to the value the recipe sets;
#: an option given beside ``--recipe`` with another value than its default wins.
RECIPES = {
    "recommended": {
        "run": {"pretrain": "simclr", "pretrain_epochs": 50, "head_init": "probe",
                "strategies": "random,margin+roi", "roi_loss": "rank"},
        "campaign": {"strategy": "margin", "roi_loss": "rank"},
    },
}


def context_split(context_channels, last_width):
    """``context_channels`` (channels, or a share of ``last_width`` as a float in [0, 1))
    -> the number of channels of the context branch; the taught block keeps at least one.
    """
    if isinstance(context_channels, bool) or not isinstance(context_channels, (int, float)):
        n = None
    elif isinstance(context_channels, float):
        n = (min(int(round(context_channels * last_width)), last_width - 1)
             if 0 <= context_channels < 1 else None)
    else:
        n = context_channels if 0 <= context_channels < last_width else None
    if n is None:
        raise ValueError(
            f"context_channels must be a whole number of channels from 0 to n_filters[-1] - 1 "
            f"= {last_width - 1} (the taught block keeps at least one) or a share of the last "
            f"block in [0, 1); got {context_channels!r}.")
    return n
