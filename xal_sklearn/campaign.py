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

import csv
import datetime
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state
from torch.utils.data import Dataset

from ._persist import (atomic_folder, atomic_write, check_format, read_json,
                       resolve_folder)
from ._validation import accepts_keyword, check_device, list_problems, with_missing
from .classifier import CNNClassifier, check_precision
from .pretrain import DEFAULT_PRETRAIN_EPOCHS, pretrain_encoder
from .datasets import (DataLoadError, read_image, read_mask, resize_image, resize_mask,
                       split_mask_field)
from .labelstudio import label_config, make_task, parse_export, read_label_csv, source_ids
from .learner import ActiveLearner
from .modules import DEFAULT_CONTEXT_CHANNELS, DEFAULT_N_FILTERS, context_split
from .registry import STRATEGY_NAMES, strategy_spec, strategy_words, uses_pool_rois
from .roi_loss import DEFAULT_ROI_LOSS, resolve_roi_settings, with_legacy_settings
from .roi_model import ROIPredictor, roi_model_quality
from .scoring import score_pool
from .strategies import dual_criterion_sampling, uncertainty_sampling

__all__ = ["Campaign", "CampaignError", "PoolImages"]

FORMAT, VERSION = "xal-campaign", 1
#: The strategy a campaign made without ``strategy`` uses: the dual criterion, on the pool
#: ROIs the ROI model draws from the expert's once labels carry some (until then, and for
#: images whose ROI it cannot draw, it ranks by uncertainty).
DEFAULT_STRATEGY = "dual"
#: Folds of the ROI model's cross-validated quality that ``status`` reports.
ROI_CV_FOLDS = 3
STATE_FORMAT = "xal-campaign-state"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")


class CampaignError(ValueError):
    """A campaign operation that cannot be carried out; the message says why."""


class ManifestColumnsWarning(UserWarning):
    """A campaign's manifest has columns that the campaign does not read."""


#: The columns a campaign reads from a manifest.
MANIFEST_COLUMNS = ("image", "mask", "id")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class PoolImages(Dataset):
    """Pool images read from disk and resized on access, with their ROI masks if any.

    Items are ``(image (C, H, W) float32, mask (H, W) bool or None)``, which
    :func:`~xal_sklearn.score_pool` and the strategies stream batch by batch.
    """

    def __init__(self, root, images, masks, size, rgb=False):
        # a mask entry may name several files separated by ";": the ROI is their union
        self.root, self.images, self.masks = Path(root), list(images), list(masks)
        self.size, self.rgb = tuple(size), rgb

    def __len__(self):
        return len(self.images)

    def image(self, i):
        return resize_image(read_image(self.root / self.images[i], as_gray=not self.rgb),
                            self.size)

    def mask(self, i):
        names = split_mask_field(self.masks[i])
        if not names:
            return None
        return resize_mask(read_mask([self.root / name for name in names]), self.size)

    def __getitem__(self, i):
        return self.image(i), self.mask(i)


class Campaign:
    """An active-learning campaign with a human annotator, kept in a folder.

    Create one with :meth:`create`, reopen it with :meth:`open`; then alternate
    :meth:`query` (write the next batch for the expert) and :meth:`import_labels`
    (read the expert's answers, retrain, save). :meth:`status` says where it stands.
    """

    def __init__(self, folder, config, pool, state):
        self.folder, self.config, self.pool, self.state = Path(folder), config, pool, state
        self._learner = None

    # --- creating and opening --------------------------------------------------------
    @classmethod
    def create(cls, folder, images, classes, manifest=None, image_size=128, rgb=False,
               roi_loss=DEFAULT_ROI_LOSS, roi_weight=None, roi_balance=None, roi_dilation=None,
               roi_warmup=None, roi_conflict=None, alpha=0.3, epochs=20, batch_size=32, lr=1e-3,
               device="cpu", precision="float32", random_state=0, module=None,
               module_weights=None, context_channels=None, url_prefix="/data/local-files/?d=",
               document_root="/", strategy=DEFAULT_STRATEGY, roi_threshold=None):
        """Start a campaign in ``folder`` over the images under ``images``.

        Parameters
        ----------
        folder : path-like
            The campaign folder; must not hold a campaign yet.
        images : path-like
            Folder of the pool's images (read in place, never copied).
        classes : sequence of str
            The classes the expert chooses from (a "no lesion" class is labelled
            without a region).
        manifest : path-like, optional
            CSV with an ``image`` column and optionally ``mask`` (an ROI image:
            nonzero = ROI; several files separated by ``;`` give their union)
            and ``id`` (your own name for the image, such as an accession or
            study number, shown to the annotator beside the file name), paths
            relative to ``images``; default: every image file under ``images``.
        image_size : int, default=128
            Images are resized to ``image_size`` x ``image_size`` for the model.
        rgb : bool, default=False
        roi_loss : str or None, default="rank"
            The attention loss on the expert's ROIs that training adds to the
            cross-entropy (see :class:`~xal_sklearn.CNNClassifier`); it taught
            attention on brain MRI without costing accuracy (docs/results.md).
            None trains with the cross-entropy only.
        roi_weight, roi_balance, roi_dilation, roi_warmup, roi_conflict : optional
            As in :class:`~xal_sklearn.CNNClassifier`; those left out take its
            defaults, and all (``roi_loss`` too) are written into the campaign's
            configuration, so later versions with other defaults train the
            campaign the same way.
        alpha : float, default=0.3
            Weight of uncertainty in :func:`~xal_sklearn.dual_criterion_sampling`.
        strategy : str, default="dual"
            The query strategy by name, from the same registry as ``xal run``
            (:data:`~xal_sklearn.registry.STRATEGY_NAMES`: random, entropy, margin,
            bald, badge, coreset, dual, dual_cluster ...). For the strategies that
            compare attention with the ROI (dual, dual_kcenter, dual_cluster,
            misalignment) the campaign also trains an
            :class:`~xal_sklearn.ROIPredictor` on the expert's ROIs at every import
            and scores pool images without an ROI of their own by the ROI it
            draws; before any ROI is drawn they rank by uncertainty.
        roi_threshold : float in (0, 1), optional
            The ROI model's threshold (default: ROIPredictor's).
        epochs, batch_size, lr, device, precision, random_state : the classifier's settings
        module : str, optional
            A torchvision backbone by name (see :mod:`xal_sklearn.backbones`)
            instead of :class:`~xal_sklearn.SmallCNN`; ``module_weights`` a local
            ImageNet state dict for it (stored as an absolute path).
        context_channels : int or float, optional
            Channels of :class:`~xal_sklearn.SmallCNN`'s last block given to its
            context branch (a number, or a share in [0, 1); ``0``: no branch);
            default: SmallCNN's. Written into the configuration; not with ``module``.
        url_prefix, document_root : str
            Task image URLs are ``url_prefix`` + the file's path relative to
            ``document_root``; the default suits Label Studio's local-file serving
            (``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
            ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` = ``document_root``).
        """
        folder, root = Path(folder), Path(images).resolve()
        if (folder / "campaign.json").exists():
            raise CampaignError(f"{folder} already holds a campaign.")
        if not root.is_dir():
            raise CampaignError(f"Image folder {root} does not exist.")
        classes = [str(c).strip() for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(classes):
            raise CampaignError(f"classes must be 2 or more distinct names, got {classes}.")
        check_device(device)
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
        if module is not None:  # a torchvision backbone
            from .backbones import BACKBONES

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
        images_, masks, manifest_ids = cls._list_pool(root, manifest, folder)
        given = {"roi_weight": roi_weight, "roi_balance": roi_balance,
                 "roi_dilation": roi_dilation, "roi_warmup": roi_warmup,
                 "roi_conflict": roi_conflict}
        roi = resolve_roi_settings(roi_loss, **given)
        config = {
            "format": FORMAT, "version": VERSION, "created": _now(), "classes": classes,
            "pool_root": str(root), "image_size": [int(image_size)] * 2, "rgb": bool(rgb),
            "classifier": {"max_epochs": int(epochs), "batch_size": int(batch_size),
                           "lr": float(lr), "roi_loss": roi_loss, **roi,
                           "device": device, "precision": precision,
                           "random_state": int(random_state),
                           **network, **strategy_params},
            "strategy": {"name": strategy, "alpha": float(alpha), "uncertainty": "entropy",
                         "alignment": "soft_dice"},
            "roi_model": (None if roi_model is None else
                          {k: v for k, v in roi_model.json_params().items()
                           if k != "init_weights"}),
            "random_state": int(random_state), "url_prefix": url_prefix,
            "document_root": str(document_root)}
        check_precision(precision)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".pool.csv.tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "image", "mask", "manifest_id"])
            w.writerows([i, im, m, mid] for i, (im, m, mid)
                        in enumerate(zip(images_, masks, manifest_ids)))
        (folder / ".pool.csv.tmp").replace(folder / "pool.csv")
        campaign = cls(folder, config, {"images": images_, "masks": masks,
                                        "manifest_ids": manifest_ids}, cls._empty_state())
        campaign._save_state(campaign.state, None, None)
        atomic_write(folder / "campaign.json", json.dumps(config, indent=1))  # written last
        return campaign

    @staticmethod
    def _list_pool(root, manifest, folder):
        study = Path(folder).resolve()
        if manifest is None:
            files = sorted(p for p in root.rglob("*") if p.is_file()
                           and str(p).lower().endswith(IMAGE_SUFFIXES)
                           and not p.resolve().is_relative_to(study))
            images, masks = [str(p.relative_to(root)) for p in files], [""] * len(files)
            ids = [""] * len(files)
        else:
            try:
                with open(manifest, newline="", encoding="utf-8-sig") as f:
                    rows = list(csv.DictReader(f))
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                raise CampaignError(f"Could not read manifest {manifest}: {exc}") from exc
            if not rows or "image" not in rows[0]:
                raise CampaignError(f"Manifest {manifest} needs an 'image' column and rows.")
            images = [(r.get("image") or "").strip() for r in rows]
            masks = [";".join(split_mask_field(r.get("mask"))) for r in rows]
            ids = [(r.get("id") or "").strip() for r in rows]
            problems = []
            for line, (image, mask) in enumerate(zip(images, masks), start=2):
                for name in [image] + split_mask_field(mask):
                    path = (root / name).resolve()
                    if not name or not path.is_relative_to(root) or not path.is_file():
                        problems.append(f"line {line}: {name!r} is not a file inside {root}")
            if problems:
                raise CampaignError(list_problems(f"Manifest {manifest}", problems)
                                    + _manifest_root_hint(root, manifest, images, masks))
            unread = [c for c in rows[0] if c and c not in MANIFEST_COLUMNS]
            if unread:
                warnings.warn(
                    f"Manifest {manifest}: column(s) {', '.join(map(repr, unread))} are not "
                    f"read; a campaign reads {', '.join(MANIFEST_COLUMNS)}. Its labels come "
                    "from the expert (import), never from the manifest, and batches are not "
                    "spread by group.", ManifestColumnsWarning, stacklevel=3)
        if not images:
            raise CampaignError(f"No image files under {root}.")
        return images, masks, ids

    @staticmethod
    def _empty_state():
        return {"format": STATE_FORMAT, "version": VERSION, "labelled": [], "pending": {},
                "rounds": [], "next_batch": 1}

    @classmethod
    def open(cls, folder):
        """Reopen the campaign in ``folder`` (refusing another format or version)."""
        folder = Path(folder)
        if not (folder / "campaign.json").is_file():
            raise CampaignError(f"{folder} is not a campaign folder (no campaign.json).")
        config = read_json(folder / "campaign.json")
        check_format(config, FORMAT, VERSION, str(folder / "campaign.json"))
        with open(folder / "pool.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        pool = {"images": [r["image"] for r in rows], "masks": [r["mask"] for r in rows],
                # campaigns created before the column existed have no manifest ids
                "manifest_ids": [r.get("manifest_id") or "" for r in rows]}
        state = read_json(resolve_folder(folder / "state") / "state.json")
        check_format(state, STATE_FORMAT, VERSION, str(folder / "state"))
        return cls(folder, config, pool, state)

    # --- pieces ---------------------------------------------------------------------
    @property
    def classes(self):
        return list(self.config["classes"])

    def _classifier_params(self):
        # a campaign made before these settings existed trained with them off, and a
        # SmallCNN campaign made before the context branch existed trained without it
        params = with_legacy_settings(self.config["classifier"])
        if "module" not in params:
            params.setdefault("module__context_channels", 0)
        return params

    def _template(self):
        params = self._classifier_params()
        if params.get("init_weights"):  # kept relative to the folder, which may move
            params["init_weights"] = str(self.folder / params["init_weights"])
        return CNNClassifier(classes=self.classes, **params)

    # --- warm start ------------------------------------------------------------------
    def pretrain(self, method="simclr", epochs=DEFAULT_PRETRAIN_EPOCHS, batch_size=256,
                 progress=None):
        """Pretrain the network on the campaign's whole pool, without labels.

        :func:`~xal_sklearn.pretrain_encoder` on every pool image (as the model
        sees it), seeded by the campaign's ``random_state``; the weights go to
        ``pretrain.pt`` in the campaign folder and every later training (the
        next import's retraining onwards) starts from them, its last layer from
        a linear probe of them (``head_init="probe"``). The model trained so far
        is kept until then. Running it again replaces the warm start.

        Returns
        -------
        dict with ``path`` and the weights' ``info`` (method, epochs, images,
        seconds ...).
        """
        X = self._images(list(range(len(self.pool["images"]))))
        batch_size = int(batch_size)
        if len(X) < batch_size:
            raise CampaignError(f"The pool has {len(X)} images, fewer than one pretraining "
                                f"batch of {batch_size}; pass a smaller batch size.")
        template = CNNClassifier(classes=self.classes, **{
            k: v for k, v in self._classifier_params().items() if k != "init_weights"})
        weights = pretrain_encoder(X, module=template, method=method, epochs=epochs,
                                   batch_size=batch_size,
                                   random_state=self.config["random_state"],
                                   device=template.device, progress=progress)
        weights.save(self.folder / "pretrain.pt")
        # the head of every later training starts from a linear probe of these features
        config = dict(self.config, classifier=dict(self.config["classifier"],
                                                   init_weights="pretrain.pt",
                                                   head_init="probe"),
                      pretrain={k: weights.info[k] for k in ("method", "epochs", "batch_size",
                                                             "n_images", "seconds")}
                      | {"when": _now()})
        atomic_write(self.folder / "campaign.json", json.dumps(config, indent=1))
        self.config = config
        return {"path": self.folder / "pretrain.pt", "info": weights.info}

    def _dataset(self, ids):
        return PoolImages(self.config["pool_root"], [self.pool["images"][i] for i in ids],
                          [self.pool["masks"][i] for i in ids], self.config["image_size"],
                          self.config["rgb"])

    def _roi_masks(self):
        with np.load(resolve_folder(self.folder / "state") / "rois.npz",
                     allow_pickle=False) as f:
            return f["masks"]

    def _roi_annotated(self):
        """Which labelled images the expert drew an ROI on (older states: the non-empty)."""
        with np.load(resolve_folder(self.folder / "state") / "rois.npz",
                     allow_pickle=False) as f:
            if "annotated" in f.files:
                return f["annotated"]
            return f["masks"].reshape(len(f["masks"]), -1).any(1)

    def _images(self, ids):
        """The images of ``ids``, read and resized for the model."""
        data = self._dataset(ids)
        try:
            return np.stack([data.image(k) for k in range(len(ids))])
        except DataLoadError as exc:
            raise CampaignError(f"Could not read a pool image: {exc}") from exc

    def _labelled_arrays(self):
        X = self._images([e["id"] for e in self.state["labelled"]])
        return (X, np.array([e["label"] for e in self.state["labelled"]]),
                with_missing(self._roi_masks(), self._roi_annotated()))

    def learner(self):
        """The campaign's trained :class:`~xal_sklearn.ActiveLearner` (None before labels)."""
        if self._learner is None and self.state["labelled"]:
            X, y, masks = self._labelled_arrays()
            self._learner = ActiveLearner.load(
                resolve_folder(self.folder / "state") / "learner", self._template(),
                self._strategy()[0], X_training=X, y_training=y, roi_training=masks,
                roi_model=self._roi_template())
        return self._learner

    def _strategy(self):
        """``(function, kwargs, words)`` of the campaign's query strategy."""
        cfg = self.config["strategy"]
        name = cfg.get("name")
        if name is None:  # made before strategies were chosen by name: the old rule
            if any(self.pool["masks"]):
                return (dual_criterion_sampling, {"alpha": cfg["alpha"]},
                        f"dual-criterion sampling (alpha={cfg['alpha']})")
            return uncertainty_sampling, {}, "uncertainty (entropy) sampling"
        func, kwargs, _ = strategy_spec(name, cfg["alpha"], cfg["uncertainty"],
                                        cfg["alignment"])
        return func, kwargs, strategy_words(name, f"alpha={cfg['alpha']:g}")

    def _roi_template(self):
        """The unfitted ROI model of the campaign's configuration (None without one); it
        starts from the campaign's warm start when the SmallCNN has one."""
        params = self.config.get("roi_model")
        if not params:
            return None
        params = dict(params, n_filters=tuple(params["n_filters"]))
        warm = self.config["classifier"].get("init_weights")
        if warm and "module" not in self.config["classifier"]:
            params["init_weights"] = str(self.folder / warm)
        return ROIPredictor(**params)

    def _save_state(self, state, masks, learner, annotated=None):
        """Write a complete new state folder and swap it in (the only state write)."""
        h, w = self.config["image_size"]
        masks = np.zeros((0, h, w), bool) if masks is None else masks
        if annotated is None:
            annotated = (self._roi_annotated() if len(masks) else np.zeros(0, bool))
        with atomic_folder(self.folder / "state") as tmp:
            np.savez(tmp / "rois.npz", masks=masks, annotated=np.asarray(annotated, bool))
            if learner is not None:
                learner.save(tmp / "learner", include_data=False)
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
        self.state = state

    # --- query --------------------------------------------------------------------------
    def query(self, n, allow_repeat=False, progress=None):
        """Choose the next ``n`` images for the expert and write their batch folder.

        With no labels yet the batch is a uniformly random sample (seeded); then
        the campaign's strategy ranks the unlabelled pool:
        :func:`~xal_sklearn.dual_criterion_sampling` when pool images have ROIs,
        else :func:`~xal_sklearn.uncertainty_sampling`. Images handed out in a
        batch that is still waiting for its labels are reserved and not handed out
        again unless ``allow_repeat``.

        Returns
        -------
        dict
            ``batch``, ``folder``, ``ids``, ``method`` (in words), ``n_pool``
            (images that could be chosen), ``n_requested``, ``still_pending``
            (``{batch: n_images}`` of batches still waiting for labels) and
            ``notes``: sentences on what the caller may not expect (a batch
            still waiting whose images were held back, a batch smaller than
            asked for, and why).
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise CampaignError(f"n must be a positive integer, got {n!r}.")
        labelled = {e["id"] for e in self.state["labelled"]}
        reserved = {i for ids in self.state["pending"].values() for i in ids}
        excluded = labelled | (set() if allow_repeat else reserved)
        candidates = np.array([i for i in range(len(self.pool["images"])) if i not in excluded])
        if len(candidates) == 0:
            waiting = ", ".join(f"{int(b):03d}" for b in sorted(self.state["pending"], key=int))
            raise CampaignError("No unlabelled, unreserved image is left in the pool"
                                + ("" if allow_repeat or not reserved else
                                   f"; batch(es) {waiting} still wait for labels: import them, "
                                   "or allow repeats") + ".")
        n_requested = int(n)
        n = min(n_requested, len(candidates))
        batch = self.state["next_batch"]
        learner = self.learner()
        pool = self._dataset(candidates)
        if learner is None:
            rng = check_random_state(self.config["random_state"] + batch)
            chosen = np.sort(rng.choice(len(candidates), n, replace=False))
            method = "random sample: no labelled images yet, so the model cannot rank the pool"
            acquisition = np.full(n, np.nan)
            scores = None
        else:
            strategy, kwargs, words = self._strategy()
            if accepts_keyword(strategy, "roi_masks"):
                # the pool's own ROIs (manifest masks) where it has them; the ROI model
                # draws the others
                given = [pool.mask(k) for k in range(len(pool))]  # None: no manifest mask
                kwargs["roi_masks"] = given if any(m is not None for m in given) else None
            chosen, _ = learner.query(pool, n_instances=n, **kwargs)
            scores = learner.query_scores_
            acquisition = (np.full(n, np.nan) if scores is None
                           else np.asarray(scores["combined"], dtype=float))
            method = words + self._roi_words(learner)
        ids = [int(candidates[k]) for k in chosen]
        still_pending = {int(b): len(v) for b, v in sorted(self.state["pending"].items(),
                                                            key=lambda kv: int(kv[0]))}
        notes = self._query_notes(still_pending, allow_repeat, requested=n_requested,
                                  n_candidates=len(candidates), n_labelled=len(labelled))
        folder = self._write_batch(batch, ids, acquisition, method, progress, scores)
        state = dict(self.state, pending=dict(self.state["pending"], **{str(batch): ids}),
                     next_batch=batch + 1)
        self._save_state(state, self._roi_masks(), learner)
        return {"batch": batch, "folder": folder, "ids": ids, "method": method,
                "n_pool": len(candidates), "n_requested": n_requested,
                "still_pending": still_pending, "notes": notes}

    @staticmethod
    def _roi_words(learner):
        """Where the pool's ROIs came from in the last query, in words ('' if unused)."""
        sources = learner.pool_roi_source_
        if sources is None:
            return ""
        count = {k: int(np.sum(sources == k)) for k in ("given", "predicted", "none")}
        if count["given"] + count["predicted"] == 0:
            why = ("no labelled image has an ROI yet" if learner.roi_model_ is None
                   else "the ROI model drew none")
            return f": no pool ROIs ({why}), so the pool was ranked by uncertainty"
        parts = [f"{count['given']} from the manifest" if count["given"] else "",
                 f"{count['predicted']} drawn by the ROI model" if count["predicted"] else "",
                 f"{count['none']} without (ranked by uncertainty at the pool's typical "
                 "misalignment)" if count["none"] else ""]
        return ", Grad-CAM compared with the pool ROIs: " + ", ".join(p for p in parts if p)

    @staticmethod
    def _query_notes(still_pending, allow_repeat, requested, n_candidates, n_labelled):
        notes = []
        if still_pending:
            listed = ", ".join(f"batch {b:03d} ({k} images)" for b, k in still_pending.items())
            notes.append(
                f"Still waiting for labels: {listed}. "
                + ("Its images may be handed out again (allow_repeat)." if allow_repeat else
                   f"Their {sum(still_pending.values())} images are reserved and were not "
                   "offered again (allow_repeat / --allow-repeat would offer them).")
                + " Import each batch's labels when they come.")
        if n_candidates < requested:
            reserved = "" if allow_repeat else (
                f", {sum(still_pending.values())} reserved by pending batches")
            notes.append(f"Asked for {requested} images, got {n_candidates}: that is every "
                         f"image left ({n_labelled} labelled{reserved}).")
        return notes

    def _write_batch(self, batch, ids, acquisition, method, progress, query_scores=None):
        from PIL import Image

        folder = self.folder / "batches" / f"{batch:03d}"
        learner = self.learner()
        data = self._dataset(ids)
        scores = rois = None
        given = [data.mask(k) for k in range(len(ids))]  # the manifest's, where it has one
        if learner is not None:
            scores = score_pool(learner, data, return_maps=True, progress=progress)
            model = learner.roi_model_
            if model is not None and hasattr(model, "predict"):
                rois = model.predict(data)  # the ROI the model draws, shown to the expert
        with atomic_folder(folder) as tmp:
            (tmp / "images").mkdir()
            (tmp / "overlays").mkdir()
            tasks, rows, info = [], [], []
            for k, xal_id in enumerate(ids):
                original = read_image(Path(self.config["pool_root"]) / data.images[k],
                                      as_gray=not self.config["rgb"])
                height, width = original.shape[1:]
                picture = np.moveaxis(original, 0, -1)
                picture = (picture[..., 0] if picture.shape[-1] == 1 else picture)
                image_path = (tmp / "images" / f"{xal_id:06d}.png")
                Image.fromarray(np.round(picture * 255).astype(np.uint8)).save(image_path)
                final = folder / "images" / f"{xal_id:06d}.png"
                overlay_final = folder / "overlays" / f"{xal_id:06d}.png"
                predicted, probability, box = None, None, None
                # the pool ROI the query compared attention with: the manifest's mask,
                # else the one the ROI model drew
                roi = (given[k] if given[k] is not None and given[k].any() else
                       None if rois is None or not rois[k].any() else rois[k])
                roi_kind = ("manifest_roi" if given[k] is not None and given[k].any() else
                            "predicted_roi")
                if scores is not None:
                    col = int(np.argmax(scores.proba[k]))
                    predicted, probability = self.classes[col], float(scores.proba[k, col])
                    # pre-drawn for the expert to correct: the ROI the model draws, else
                    # where the classifier looked
                    box = (_attention_box(scores.maps[k], (height, width)) if roi is None
                           else _mask_box(roi, (height, width)))
                    _save_overlay(tmp / "overlays" / f"{xal_id:06d}.png", picture,
                                  scores.maps[k], predicted, probability, box, roi,
                                  roi_kind.replace("_roi", " ROI"))
                else:
                    _save_overlay(tmp / "overlays" / f"{xal_id:06d}.png", picture, None,
                                  None, None, None)
                image_url, overlay_url = self._url(final), self._url(overlay_final)
                score = float(acquisition[k]) if np.isfinite(acquisition[k]) else 0.0
                # the scan as the annotator knows it: its file as given at init, its own id
                original = str(Path(self.config["pool_root"]) / data.images[k])
                manifest_id = self._manifest_id(xal_id)
                task = make_task(xal_id, batch, image_url, overlay_url, width, height,
                                 predicted, probability, score, box,
                                 model_version=f"xal batch {batch}", original_image=original,
                                 manifest_id=manifest_id)
                if predicted is None:  # no model yet: nothing to pre-annotate
                    del task["predictions"]
                tasks.append(task)
                rows.append([xal_id, original, manifest_id, str(final), predicted or "", "",
                             "", "", "", ""])
                info.append({"id": xal_id, "image": data.images[k], "original_image": original,
                             "manifest_id": manifest_id, "image_url": image_url,
                             "width": width, "height": height, "predicted": predicted,
                             "probability": probability, "acquisition_score": score,
                             **_logged_scores(query_scores, k),
                             "box": None if box is None else
                             (roi_kind if roi is not None else "attention")})
            (tmp / "tasks.json").write_text(json.dumps(tasks, indent=1))
            (tmp / "label_config.xml").write_text(label_config(self.classes))
            with open(tmp / "to_label.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["xal_id", "original_image", "manifest_id", "image",
                            "predicted_label", "label", "x_min", "y_min", "x_max", "y_max"])
                w.writerows(rows)
            (tmp / "batch.json").write_text(json.dumps(
                {"batch": batch, "created": _now(), "method": method, "images": info},
                indent=1))
        return folder

    def _manifest_id(self, xal_id):
        ids = self.pool.get("manifest_ids") or []
        return ids[xal_id] if xal_id < len(ids) else ""

    def _url(self, path):
        relative = Path(path).resolve().relative_to(Path(self.config["document_root"]).resolve())
        return self.config["url_prefix"] + str(relative)

    # --- import -------------------------------------------------------------------------
    def import_labels(self, source):
        """Import the expert's answers for pending batches, retrain, and save; all or nothing.

        Parameters
        ----------
        source : path-like
            A Label Studio JSON export (``.json``) or a filled ``to_label.csv``.

        Returns
        -------
        dict
            ``n_imported``, ``n_with_roi``, ``released`` (pending images left
            unlabelled, back in the pool), ``agreement`` (share of imported images
            whose label the model predicted before seeing them: an honest estimate
            of its accuracy), ``n_skipped`` (tasks of batches imported before, as
            in an export of a Label Studio project used for several rounds; their
            labels must not have changed) and ``batches`` (the batches completed).

        Raises
        ------
        CampaignError
            When no batch is waiting, or every image of ``source`` was imported
            before (the message names the batch, when, and how many labels);
            :class:`~xal_sklearn.labelstudio.AnnotationImportError` lists every
            bad task or row.
        """
        pending = {int(i): int(b) for b, ids in self.state["pending"].items() for i in ids}
        source = Path(source)
        imported = {e["id"]: e for e in self.state["labelled"]}
        in_file = source_ids(source)
        if not pending or (in_file and not in_file & set(pending)):
            self._refuse_import(source, pending, in_file & set(imported))
        expected = {}
        for batch in set(pending.values()):
            meta = read_json(self.folder / "batches" / f"{batch:03d}" / "batch.json")
            for img in meta["images"]:
                expected[img["id"]] = {"image_url": img["image_url"], "batch": batch,
                                       "size": (img["width"], img["height"]),
                                       "predicted": img["predicted"]}
        # one Label Studio project for several rounds: tasks already imported are skipped
        done = {i: (e["label"], f"batch {e['batch']:03d}") for i, e in imported.items()}
        if source.suffix.lower() == ".csv":
            answers = read_label_csv(source, expected, self.classes, imported=done)
        else:
            answers = parse_export(source, expected, self.classes, imported=done)
        h, w = self.config["image_size"]
        new_masks = np.stack([resize_mask(a.mask, (h, w)) if a.mask is not None
                              else np.zeros((h, w), bool) for a in answers])
        # an answer without a drawn region is not an ROI annotation (nobody drew) unless
        # the manifest gave the image a mask: that one is carried into the labelled set
        new_annotated = np.array([a.mask is not None for a in answers], bool)
        roi_source = np.where(new_annotated, "expert", "").astype(object)
        data = self._dataset([a.xal_id for a in answers])
        for k in np.flatnonzero(~new_annotated):
            given = data.mask(int(k))
            if given is not None:
                new_masks[k], new_annotated[k], roi_source[k] = given, True, "manifest"
        X_new = self._images([a.xal_id for a in answers])
        y_new = np.array([a.label for a in answers])
        learner = self.learner()
        if learner is None:
            learner = ActiveLearner(self._template(), self._strategy()[0],
                                    random_state=self.config["random_state"],
                                    roi_model=self._roi_template())
            learner.fit(X_new, y_new, roi_masks=with_missing(new_masks, new_annotated))
        else:
            learner.teach(X_new, y_new, roi_masks=with_missing(new_masks, new_annotated))
        roi_cv = self._roi_cross_validated(learner)
        labelled_before = self.state["labelled"]
        entries = [{"id": a.xal_id, "label": a.label, "batch": expected[a.xal_id]["batch"],
                    "time": a.time or _now(), "annotator": a.annotator,
                    "roi": bool(new_masks[k].any()), "source": source.name,
                    **({"roi_from": "manifest"} if roi_source[k] == "manifest" else {})}
                   for k, a in enumerate(answers)]
        predicted = [expected[a.xal_id]["predicted"] for a in answers]
        judged = [(p, a.label) for p, a in zip(predicted, answers) if p is not None]
        agreement = (float(np.mean([p == t for p, t in judged])) if judged else None)
        done_batches = {expected[a.xal_id]["batch"] for a in answers}
        labelled_ids = {a.xal_id for a in answers}
        released = [i for i, b in pending.items() if b in done_batches and i not in labelled_ids]
        masks_all = np.concatenate([self._roi_masks(), new_masks])
        annotated_all = np.concatenate([self._roi_annotated(), new_annotated])
        state = dict(self.state, labelled=labelled_before + entries,
                     pending={b: ids for b, ids in self.state["pending"].items()
                              if int(b) not in done_batches},
                     rounds=self.state["rounds"] + [{
                         "batches": sorted(done_batches), "time": _now(),
                         "n_imported": len(entries), "n_labelled": len(labelled_before)
                         + len(entries), "agreement": agreement, "n_judged": len(judged),
                         "roi_model": roi_cv}])
        self._save_state(state, masks_all, learner, annotated_all)
        self._learner = learner
        with_roi = new_masks.reshape(len(new_masks), -1).any(1)
        return {"n_imported": len(entries), "n_with_roi": int(with_roi.sum()),
                "n_roi_from_manifest": int((with_roi & (roi_source == "manifest")).sum()),
                "released": released, "agreement": agreement,
            "n_skipped": len(in_file & set(imported)), "batches": sorted(done_batches)}

    def _roi_cross_validated(self, learner):
        """The ROI model's quality on the labelled ROIs, cross-validated (None if none).

        Each of :data:`ROI_CV_FOLDS` folds of the annotated labelled images is drawn
        by a model trained on the others, so every image is judged unseen.
        """
        template = self._roi_template()
        annotated = learner.roi_annotated_
        if template is None or annotated.sum() < 2 * ROI_CV_FOLDS:
            return None
        from sklearn.model_selection import KFold

        X, masks = learner.X_training_[annotated], learner.roi_training_[annotated]
        dice, auc = np.full(len(X), np.nan), np.full(len(X), np.nan)
        folds = KFold(ROI_CV_FOLDS, shuffle=True, random_state=self.config["random_state"])
        for train, test in folds.split(X):
            model = clone(template).fit(X[train], masks[train])
            q = roi_model_quality(model, X[test], masks[test])
            dice[test], auc[test] = q.dice_per_image, q.roi_auc_per_image
        lesions = ~np.isnan(dice)
        return {"n": int(len(X)), "n_lesion": int(lesions.sum()), "folds": ROI_CV_FOLDS,
                "dice": float(np.nanmean(dice)) if lesions.any() else None,
                "roi_auc": float(np.nanmean(auc)) if lesions.any() else None}

    def _refuse_import(self, source, pending, seen_before):
        """Say why ``source`` cannot be imported: imported already, or no batch waits."""
        waiting = sorted(set(pending.values()))
        now = ("No batch is waiting for labels; run query for a new one." if not waiting else
               "Waiting for labels: " + ", ".join(f"batch {b:03d}" for b in waiting)
               + "; import its Label Studio export or filled to_label.csv.")
        if not seen_before:
            raise CampaignError(now if not waiting else
                                f"{source.name} holds no image of a pending batch. {now}")
        entries = [e for e in self.state["labelled"] if e["id"] in seen_before]
        said = []
        for batch in sorted({e["batch"] for e in entries}):
            rounds = [r for r in self.state["rounds"] if batch in r["batches"]]
            files = sorted({e.get("source", "?") for e in self.state["labelled"]
                            if e["batch"] == batch})
            when = rounds[-1]["time"] if rounds else "?"
            n = sum(e["batch"] == batch for e in self.state["labelled"])
            said.append(f"batch {batch:03d} was imported on {when} ({n} labels, from "
                        f"{', '.join(files)})")
        raise CampaignError(f"{source.name} holds labels that were already imported: "
                            + "; ".join(said) + f". {now}")

    # --- status -------------------------------------------------------------------------
    def status(self):
        """Where the campaign stands, as a dict (see :meth:`summary` for words)."""
        labels = [e["label"] for e in self.state["labelled"]]
        judged = [(r["agreement"], r["n_judged"]) for r in self.state["rounds"]
                  if r.get("agreement") is not None]
        total = sum(n for _, n in judged)
        return {"n_pool": len(self.pool["images"]), "n_labelled": len(labels),
                "per_class": {c: labels.count(c) for c in self.classes},
                "n_with_roi": sum(e["roi"] for e in self.state["labelled"]),
                "rounds": len(self.state["rounds"]),
                "pending": {int(b): len(ids) for b, ids in self.state["pending"].items()},
                "agreement_last": judged[-1][0] if judged else None,
                "roi_model": next((r["roi_model"] for r in reversed(self.state["rounds"])
                                   if r.get("roi_model")), None),
                "strategy": self.config["strategy"].get("name"),
                "agreement_all": (sum(a * n for a, n in judged) / total) if total else None}

    def summary(self):
        """:meth:`status` in plain words."""
        s = self.status()
        lines = [f"Campaign {self.folder}: {s['n_labelled']} of {s['n_pool']} images labelled "
                 f"({s['n_with_roi']} with an ROI) in {s['rounds']} round(s).",
                 "Per class: " + ", ".join(f"{c} {k}" for c, k in s["per_class"].items()) + ".",
                 f"Query strategy: {self._strategy()[2]}."]
        warm = self.config.get("pretrain")
        if warm:
            lines.append(f"Warm start: {warm['method']}, {warm['epochs']} epochs on "
                         f"{warm['n_images']} pool images ({warm['when']}); every training "
                         "since starts from it.")
        if self.config.get("roi_model"):
            q = s["roi_model"]
            if q is None:
                lines.append("ROI model: not trained yet (it needs at least "
                             f"{2 * ROI_CV_FOLDS} labelled images with an ROI); until then "
                             "pool images without an ROI of their own rank by uncertainty.")
            elif q["dice"] is None:
                lines.append(f"ROI model: trained on {q['n']} annotated images, none with a "
                             "lesion, so its quality cannot be judged yet.")
            else:
                lines.append(f"ROI model: {q['folds']}-fold cross-validated on the {q['n']} "
                             f"labelled images with an ROI annotation ({q['n_lesion']} with a "
                             f"lesion), it draws the expert's ROI with Dice {q['dice']:.2f} "
                             f"and pixel roi_auc {q['roi_auc']:.2f} (chance 0.5).")
        if s["pending"]:
            lines.append("Waiting for labels: " + ", ".join(
                f"batch {b:03d} ({k} images)" for b, k in sorted(s["pending"].items())) + ".")
        else:
            lines.append("No batch is waiting for labels.")
        if s["agreement_last"] is None:
            lines.append("Model estimate: none yet (it needs a round of labels to train on "
                         "and a next batch to be judged on).")
        else:
            lines.append(f"Model estimate: the expert agreed with the model's pre-annotated "
                         f"class on {s['agreement_last']:.0%} of the last imported batch "
                         f"({s['agreement_all']:.0%} over all judged batches); those images "
                         "were unseen by the model when it predicted them.")
        return "\n".join(lines)


def _attention_box(cam, size):
    """Box (pixels of an image of ``size``) around the map's peak region.

    The region is the connected area around the peak where the map stays at or above
    half the peak, so a second, weaker hot spot does not stretch the box.
    """
    from scipy import ndimage

    if cam.max() <= 0:
        return None
    regions, _ = ndimage.label(cam >= 0.5 * cam.max())
    rows, cols = np.nonzero(regions == regions[np.unravel_index(np.argmax(cam), cam.shape)])
    sy, sx = size[0] / cam.shape[0], size[1] / cam.shape[1]
    return (cols.min() * sx, rows.min() * sy, (cols.max() + 1) * sx, (rows.max() + 1) * sy)


def _logged_scores(scores, k):
    """What the strategy computed for the ``k``-th image of the batch, for batch.json."""
    if scores is None:
        return {}
    out = {}
    for field in ("uncertainty", "misalignment", "roi_source"):
        if field in scores:
            value = scores[field][k]
            out[field] = (str(value) if field == "roi_source" else
                          None if not np.isfinite(value) else float(value))
    return out


def _mask_box(mask, size):
    """Box (pixels of an image of ``size``) around a mask's largest connected region."""
    from scipy import ndimage

    regions, n = ndimage.label(mask)
    largest = 1 + int(np.argmax(ndimage.sum(mask, regions, index=np.arange(1, n + 1))))
    rows, cols = np.nonzero(regions == largest)
    sy, sx = size[0] / mask.shape[0], size[1] / mask.shape[1]
    return (cols.min() * sx, rows.min() * sy, (cols.max() + 1) * sx, (rows.max() + 1) * sy)


def _manifest_root_hint(root, manifest, images, masks):
    """Where a manifest's paths would resolve, said after its problems: they are read
    relative to the image folder, and are often written relative to the manifest's own."""
    names = [n for image, mask in zip(images, masks) for n in [image, *split_mask_field(mask)]]
    hint = (f"\nThe manifest's paths are read relative to the image folder ({root}), not to "
            "the manifest's folder.")
    candidates = [Path(manifest).resolve().parent, *list(root.parents)[:3]]
    for folder in dict.fromkeys(candidates):
        if names and all(n and (folder / n).is_file() for n in names):
            return hint + f" They are all files under {folder}: pass that as the image folder."
    return hint


def _save_overlay(path, picture, cam, predicted, probability, box, roi=None,
                  roi_words="predicted ROI"):
    """The image with the Grad-CAM over it, the predicted class and probability in the
    title, and the outline of the pool ROI the query compared it with (``roi``: the
    manifest's or the ROI model's, named by ``roi_words``), if any."""
    # a Figure without pyplot: no GUI backend needed, and the caller's backend stays as it is
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    height, width = picture.shape[:2]
    fig = Figure(figsize=(4, 4 * height / width), dpi=100)
    ax = fig.subplots()
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    if cam is not None:
        ax.imshow(cam, cmap="jet", alpha=0.4, extent=(0, width, height, 0), vmin=0, vmax=1)
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="white",
                                   lw=1.5, ls="--"))
        if roi is not None:
            ax.contour(roi.astype(float), levels=[0.5], colors="lime", linewidths=1.5,
                       extent=(0, width, 0, height), origin="upper")
        ax.set_title(f"predicted {predicted} (p={probability:.2f})"
                     + (f"; green: {roi_words}" if roi is not None else ""), fontsize=10)
    else:
        ax.set_title("no model yet (first batch)", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
