"""The :class:`Campaign`: a campaign folder's configuration and state, and its rounds."""

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state

from .._persist import atomic_folder, atomic_write, check_format, read_json, resolve_folder
from .._validation import accepts_keyword, check_device, with_missing
from ..classifier import CNNClassifier, check_precision
from ..datasets import DataLoadError
from ..learner import ActiveLearner
from ..pretrain import DEFAULT_PRETRAIN_EPOCHS, pretrain_encoder
from ..registry import strategy_spec, strategy_words
from ..roi_loss import DEFAULT_ROI_LOSS, resolve_roi_settings, with_legacy_settings
from ..roi_model import ROIPredictor
from ..strategies import dual_criterion_sampling, uncertainty_sampling
from . import _imports, _live
from ._batch import query_notes, roi_words, write_batch
from ._common import DEFAULT_STRATEGY, FORMAT, STATE_FORMAT, VERSION, CampaignError, now
from ._cache import CachedPool, build_cache, fingerprint, read_cache
from ._config import network_settings, strategy_settings
from ._lock import hold
from ._pool import PoolImages, list_pool, manifest_rois
from ._status import summary_words


class Campaign:
    """An active-learning campaign with a human annotator, kept in a folder.

    Create one with :meth:`create`, reopen it with :meth:`open`; then alternate
    :meth:`query` (write the next batch for the expert) and :meth:`import_labels`
    (read the expert's answers, retrain, save). :meth:`status` says where it stands.
    """

    def __init__(self, folder, config, pool, state):
        self.folder, self.config, self.pool, self.state = Path(folder), config, pool, state
        self._learner = self._cache = None

    # --- creating and opening --------------------------------------------------------
    @classmethod
    def create(cls, folder, images, classes, manifest=None, image_size=128, rgb=False,
               roi_loss=DEFAULT_ROI_LOSS, roi_weight=None, roi_balance=None, roi_dilation=None,
               roi_warmup=None, roi_conflict=None, alpha=0.3, epochs=20, batch_size=32, lr=1e-3,
               device="cpu", precision="float32", random_state=0, module=None,
               module_weights=None, context_channels=None, url_prefix="/data/local-files/?d=",
               document_root="/", strategy=DEFAULT_STRATEGY, roi_threshold=None,
               class_weight=None):
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
        class_weight : None or "balanced", default=None
            Weights of the classes in the cross-entropy, as in
            :class:`~xal_sklearn.CNNClassifier` ("balanced": each class by the
            inverse of its share of the labelled images, recomputed at every import).
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
        strategy_params, roi_model = strategy_settings(strategy, roi_threshold, module, device,
                                                       random_state)
        network = network_settings(module, module_weights, context_channels)
        images_, masks, manifest_ids = list_pool(root, manifest, folder)
        given = {"roi_weight": roi_weight, "roi_balance": roi_balance,
                 "roi_dilation": roi_dilation, "roi_warmup": roi_warmup,
                 "roi_conflict": roi_conflict}
        roi = resolve_roi_settings(roi_loss, **given)
        config = {
            "format": FORMAT, "version": VERSION, "created": now(), "classes": classes,
            "pool_root": str(root), "image_size": [int(image_size)] * 2, "rgb": bool(rgb),
            "classifier": {"max_epochs": int(epochs), "batch_size": int(batch_size),
                           "lr": float(lr), "roi_loss": roi_loss, **roi,
                           "device": device, "precision": precision,
                           "random_state": int(random_state),
                           **({"class_weight": class_weight} if class_weight else {}),
                           **network, **strategy_params},
            "strategy": {"name": strategy, "alpha": float(alpha), "uncertainty": "entropy",
                         "alignment": "soft_dice"},
            "roi_model": roi_model,
            "random_state": int(random_state), "url_prefix": url_prefix,
            "document_root": str(document_root)}
        check_precision(precision)
        if class_weight not in (None, "balanced"):
            raise CampaignError(f'class_weight must be None or "balanced", got {class_weight!r}.')
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
        with hold(self.folder, "xal campaign pretrain"):
            return self._pretrain(method, epochs, batch_size, progress)

    def _pretrain(self, method, epochs, batch_size, progress):
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
                      | {"when": now()})
        atomic_write(self.folder / "campaign.json", json.dumps(config, indent=1))
        self.config = config
        return {"path": self.folder / "pretrain.pt", "info": weights.info}

    def _pool_cache(self, progress=None):
        """The pool at the model's size, mapped from ``cache/`` (built on first use)."""
        if self._cache is None:
            args = (self.config["pool_root"], self.pool["images"], self.pool["masks"],
                    self.config["image_size"], self.config["rgb"])
            digest = fingerprint(*args)
            cache = read_cache(self.folder / "cache", digest)
            if cache is None:
                build_cache(self.folder / "cache", PoolImages(*args), digest,
                            progress=progress)
                cache = read_cache(self.folder / "cache", digest)
            self._cache = cache
        return self._cache

    def _dataset(self, ids):
        return CachedPool(self.config["pool_root"], [self.pool["images"][i] for i in ids],
                          [self.pool["masks"][i] for i in ids], self.config["image_size"],
                          self.config["rgb"], self._pool_cache(), ids, self.folder / "cache")

    def _original_size(self, xal_id):
        """``(width, height)`` of the pool file, as Label Studio shows it."""
        return tuple(int(v) for v in self._pool_cache()[3][xal_id])

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
        with hold(self.folder, "xal campaign query"):
            return self._query(n, allow_repeat, progress)

    def _query(self, n, allow_repeat, progress):
        # labels waiting in the live journal count as labelled: nobody labels them twice
        labelled = _live.labelled_now(self)
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
                kwargs["roi_masks"] = manifest_rois(pool)
            chosen, _ = learner.query(pool, n_instances=n, **kwargs)
            scores = learner.query_scores_
            acquisition = (np.full(n, np.nan) if scores is None
                           else np.asarray(scores["combined"], dtype=float))
            method = words + roi_words(learner)
        ids = [int(candidates[k]) for k in chosen]
        still_pending = {int(b): len(v) for b, v in sorted(self.state["pending"].items(),
                                                            key=lambda kv: int(kv[0]))}
        notes = query_notes(still_pending, allow_repeat, requested=n_requested,
                                  n_candidates=len(candidates), n_labelled=len(labelled))
        folder = write_batch(self, batch, ids, acquisition, method, progress, scores)
        state = dict(self.state, pending=dict(self.state["pending"], **{str(batch): ids}),
                     next_batch=batch + 1)
        self._save_state(state, self._roi_masks(), learner)
        return {"batch": batch, "folder": folder, "ids": ids, "method": method,
                "n_pool": len(candidates), "n_requested": n_requested,
                "still_pending": still_pending, "notes": notes}

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
            ``n_imported``, ``n_with_roi`` (``n_roi_from_manifest`` of them the
            manifest's masks of images the expert drew no region on), ``released``
            (pending images left unlabelled, back in the pool), ``agreement`` (share
            of imported images whose label the model predicted before seeing them:
            an honest estimate of its accuracy), ``n_skipped`` (tasks of batches
            imported before, as in an export of a Label Studio project used for
            several rounds; their labels must not have changed) and ``batches`` (the
            batches completed).

        Raises
        ------
        CampaignError
            When no batch is waiting, or every image of ``source`` was imported
            before (the message names the batch, when, and how many labels);
            :class:`~xal_sklearn.labelstudio.AnnotationImportError` lists every
            bad task or row.
        """
        with hold(self.folder, "xal campaign import"):
            waiting = _live.read_journal(self)[0]
            if waiting:
                raise CampaignError(
                    f"{len(waiting)} label change(s) from Label Studio (live) are not trained "
                    "in yet; run `xal campaign retrain FOLDER` (Campaign.retrain) first, then "
                    "import.")
            return _imports.import_labels(self, source)

    # --- live labels (Label Studio's ML backend) ---------------------------------------
    def retrain(self):
        """Train on the labels that came from Label Studio one by one (the journal).

        ``xal campaign serve`` retrains after every few labels by itself; this folds
        in what is left (say, when the server was stopped before its next training)
        so that the file route can go on. Returns None when nothing waits, else
        ``n_changes``, ``n_labelled``, ``agreement`` and ``round``.
        """
        return _live.retrain(self)

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
                "n_waiting": len(_live.read_journal(self)[0]),
                "agreement_all": (sum(a * n for a, n in judged) / total) if total else None}

    def summary(self):
        """:meth:`status` in plain words."""
        return summary_words(self)
