"""Labelling campaigns on disk: query a batch, let an expert label it, import, retrain.

A campaign is a folder::

    study/
      campaign.json     configuration: classes, image size, classifier, strategy (JSON)
      pool.csv          the pool: id, image, mask, manifest_id (paths under the pool
                        folder; read, never copied)
      cache/            the pool decoded and resized once (images.npy, masks.npy,
                        mapped; rebuilt when a pool file changes)
      state/            labelled set (state.json, rois.npz) and the trained learner
                        (ActiveLearner.save), replaced as a whole at every change
      batches/001/      what the expert gets: images/, overlays/ (Grad-CAM),
                        tasks.json (Label Studio import), label_config.xml,
                        to_label.csv (without Label Studio), batch.json
      live/             labels that came from Label Studio one by one (the ML
                        backend, ``xal campaign serve``), until the next training
      labelstudio.json  the project ``xal campaign connect`` set up (no secret)
      .lock             held by the process that changes the folder

Every change writes a complete new ``state/`` and swaps it in, so a crash or kill
at any point leaves the last complete state. Nothing in the folder is executed or
unpickled: configuration and state are JSON, masks plain arrays, weights go
through skorch's ``load_params`` (``torch.load(weights_only=True)``).
"""

from ._batch import attention_box as _attention_box  # noqa: F401  (the tests' name)
from ._campaign import Campaign
from ._common import MANIFEST_COLUMNS, CampaignError, ManifestColumnsWarning
from ._connect import connect, read_connection
from ._live import VERSION_PREFIX
from ._pool import PoolImages
from ._serve import DEFAULT_RETRAIN_EVERY, Backend, make_server, serve

__all__ = ["Backend", "Campaign", "CampaignError", "DEFAULT_RETRAIN_EVERY", "MANIFEST_COLUMNS",
           "ManifestColumnsWarning", "PoolImages", "VERSION_PREFIX", "connect", "make_server",
           "read_connection", "serve"]
