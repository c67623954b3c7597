"""xal-sklearn: explainability-guided active learning for medical images.

Classic active learning queries the images a model is unsure about; this
toolkit also queries the images where the model *looks at the wrong place*,
measured by the Dice between its Grad-CAM map and the expert's region of
interest.
"""

import sys
import time
import types
from importlib import import_module

from ._version import __version__ as __version__

#: When the package began to import (before torch): ``xal`` reports its run time from here.
IMPORT_STARTED = time.monotonic()

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``xal --help`` and the CLI's argument errors do not wait for torch.
_LAZY = {
    **dict.fromkeys(("dice", "iou", "mass_in_roi", "pointing_game", "roi_auc", "soft_dice"),
                    "alignment"),
    **dict.fromkeys(("badge_sampling", "bald_sampling", "coreset_sampling", "from_skactiveml",
                     "probcover_sampling", "typiclust_sampling"), "baselines"),
    "CNNClassifier": "classifier",
    "pool_embeddings": "embedding",
    "gradcam": "gradcam",
    "ActiveLearner": "learner",
    "SmallCNN": "modules",
    "EncoderWeights": "pretrain",
    "pretrain_encoder": "pretrain",
    "ROIPredictor": "roi_model",
    "score_pool": "scoring",
    **dict.fromkeys(("dual_criterion_sampling", "misalignment_sampling", "random_sampling",
                     "uncertainty_sampling"), "strategies"),
    "normalized_uncertainty": "uncertainty",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps ``xal_sklearn.gradcam`` the function once its submodule is imported.

    Importing ``xal_sklearn.gradcam`` (the module) sets the package's attribute of that
    name to the module; the eager imports this package had before ``_LAZY`` then bound
    it to the function again, and so does this.
    """

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "ActiveLearner",
    "CNNClassifier",
    "EncoderWeights",
    "ROIPredictor",
    "SmallCNN",
    "badge_sampling",
    "bald_sampling",
    "coreset_sampling",
    "dice",
    "dual_criterion_sampling",
    "from_skactiveml",
    "gradcam",
    "iou",
    "mass_in_roi",
    "misalignment_sampling",
    "normalized_uncertainty",
    "pointing_game",
    "pool_embeddings",
    "pretrain_encoder",
    "probcover_sampling",
    "random_sampling",
    "roi_auc",
    "score_pool",
    "soft_dice",
    "typiclust_sampling",
    "uncertainty_sampling",
]
