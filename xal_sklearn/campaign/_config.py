"""A new campaign's settings, checked: its strategy (and ROI model) and its network."""

from pathlib import Path

from ..modules import DEFAULT_CONTEXT_CHANNELS, DEFAULT_N_FILTERS, context_split
from ..registry import STRATEGY_NAMES, strategy_spec, uses_pool_rois
from ..roi_model import ROIPredictor
from ._common import CampaignError


def strategy_settings(strategy, roi_threshold, module, device, random_state):
    """``(estimator parameters the strategy needs, the ROI model's parameters or None)``
    for a campaign's ``strategy`` by name; each wrong choice is refused in words."""
    if strategy not in STRATEGY_NAMES:
        raise CampaignError(f"Unknown strategy {strategy!r}; choose from "
                            f"{', '.join(STRATEGY_NAMES)}.")
    _, _, strategy_params = strategy_spec(strategy)
    roi_model = None
    if uses_pool_rois(strategy):
        try:
            roi_model = ROIPredictor(warm_start=True, device=device,
                                     random_state=int(random_state),
                                     **({} if roi_threshold is None else
                                        {"threshold": roi_threshold}))
            roi_model.check_params()
        except ValueError as exc:
            raise CampaignError(f"roi_threshold: {exc}") from None
    elif roi_threshold is not None:
        raise CampaignError(f"roi_threshold is a setting of the ROI model, which strategy "
                            f"{strategy!r} does not use.")
    if module is not None and strategy_params:
        raise CampaignError(f"Strategy {strategy!r} trains the SmallCNN with "
                            f"{', '.join(f'{k}={v}' for k, v in strategy_params.items())} "
                            f"(MC dropout before the head), which a backbone ({module}) "
                            "does not take; choose another strategy or the SmallCNN.")
    return strategy_params, (None if roi_model is None else
                             {k: v for k, v in roi_model.json_params().items()
                              if k != "init_weights"})


def network_settings(module, module_weights, context_channels):
    """The classifier's network parameters: a torchvision backbone by name (with local
    weights) or the SmallCNN with its context branch; each wrong combination refused."""
    if module is not None:  # a torchvision backbone
        from ..backbones import BACKBONES

        if module not in BACKBONES:
            raise CampaignError(f"Unknown backbone {module!r}; choose one of "
                                f"{', '.join(BACKBONES)}.")
        if context_channels is not None:
            raise CampaignError("context_channels is a setting of the SmallCNN; a "
                                f"backbone ({module}) has no context branch.")
        network = {"module": module}
        if module_weights is not None:
            if not Path(module_weights).is_file():
                raise CampaignError(f"module_weights: no file at {module_weights}.")
            network["module__weights"] = str(Path(module_weights).resolve())
    else:  # the SmallCNN
        if module_weights is not None:
            raise CampaignError("module_weights needs module (a backbone name).")
        if context_channels is None:
            context_channels = DEFAULT_CONTEXT_CHANNELS
        try:
            context_split(context_channels, DEFAULT_N_FILTERS[-1])
        except ValueError as exc:
            raise CampaignError(str(exc)) from None
        network = {"module__context_channels": context_channels}
    return network
