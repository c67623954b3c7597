"""Labelling campaigns on disk: query a batch, let an expert label it, import, retrain.

A campaign is a folder::

    study/
      campaign.json     configuration: classes, image size, classifier, strategy (JSON)
      pool.csv          the pool: id, image, mask, manifest_id (paths under the pool
                        folder; read, never copied)
      state/            labelled set (state.json, rois.npz) and the trained learner
                        (ActiveLearner.save), replaced as a whole at every change
      batches/001/      what the expert gets: images/, overlays/ (Grad-CAM),
                        tasks.json (Label Studio import), label_config.xml,
                        to_label.csv (without Label Studio), batch.json

Every change writes a complete new ``state/`` and swaps it in, so a crash or kill
at any point leaves the last complete state. Nothing in the folder is executed or
unpickled: configuration and state are JSON, masks plain arrays, weights go
through skorch's ``load_params`` (``torch.load(weights_only=True)``).
"""

from ._batch import attention_box as _attention_box  # noqa: F401  (the tests' name)
from ._campaign import Campaign
from ._common import MANIFEST_COLUMNS, CampaignError, ManifestColumnsWarning
from ._pool import PoolImages

__all__ = ["Campaign", "CampaignError", "MANIFEST_COLUMNS", "ManifestColumnsWarning",
           "PoolImages"]
