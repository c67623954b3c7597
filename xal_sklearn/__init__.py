"""xal-sklearn: explainability-guided active learning for medical images.

Classic active learning queries the images a model is unsure about; this
toolkit also queries the images where the model *looks at the wrong place*,
measured by the Dice between its Grad-CAM map and the expert's region of
interest.
"""

import time

#: When the package began to import (before torch): ``xal`` reports its run time from here.
IMPORT_STARTED = time.monotonic()

from .alignment import dice, iou, mass_in_roi, pointing_game, roi_auc, soft_dice
from .baselines import (badge_sampling, bald_sampling, coreset_sampling, from_skactiveml,
                        probcover_sampling, typiclust_sampling)
from .classifier import CNNClassifier
from .embedding import pool_embeddings
from .gradcam import gradcam
from .learner import ActiveLearner
from .modules import SmallCNN
from .pretrain import EncoderWeights, pretrain_encoder
from .roi_model import ROIPredictor
from .scoring import score_pool
from .strategies import (dual_criterion_sampling, misalignment_sampling, random_sampling,
                         uncertainty_sampling)
from .uncertainty import normalized_uncertainty

__version__ = "0.1.0"

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
