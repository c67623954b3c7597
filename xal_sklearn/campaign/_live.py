"""Labels that arrive one at a time (Label Studio's webhooks), and retraining on them.

A live annotation is checked by the same rules as a file import (class names, regions,
image sizes) and written at once to the campaign's *journal*, ``live/`` (``journal.json``
and the ROI masks in ``masks.npz``, replaced as a whole at every change), without
touching the trained state: the model keeps serving. :func:`retrain` folds the journal
into the labelled set, fits a new learner on all of it, and writes the new ``state/``
(which records the last journal entry it holds, so a crash between the two writes
applies nothing twice) before trimming the journal. Entries are "image ``id`` has label
``label``" or "image ``id`` has no label" (a deleted annotation): applying one again
changes nothing.
"""

import contextlib
import json
from pathlib import Path

import numpy as np

from .._names import DEFAULT_TOP
from .._persist import atomic_folder, read_json, resolve_folder
from .._validation import accepts_keyword, with_missing
from ..datasets import resize_mask
from ..labelstudio import AnnotationImportError, parse_export
from ..learner import ActiveLearner
from ..scoring import score_pool
from ._batch import pre_drawn_box, query_roi
from ._common import CampaignError, now
from ._imports import roi_cross_validated
from ._lock import hold
from ._pool import manifest_rois

#: ``batch`` of labelled entries that came from Label Studio one by one.
LIVE_BATCH = 0
#: Model versions are ``xal round N``.
VERSION_PREFIX = "xal round "


# --- the journal -------------------------------------------------------------------------

def read_journal(campaign):
    """``(entries, masks)`` of the journal not yet in the trained state."""
    folder = resolve_folder(campaign.folder / "live")
    if not (folder / "journal.json").is_file():
        return [], np.zeros((0, *campaign.config["image_size"]), bool)
    entries = read_json(folder / "journal.json")["entries"]
    with np.load(folder / "masks.npz", allow_pickle=False) as f:
        masks = f["masks"]
    applied = campaign.state.get("journal_applied", 0)
    keep = [k for k, e in enumerate(entries) if e["seq"] > applied]
    return [entries[k] for k in keep], masks[keep]


def _write_journal(campaign, entries, masks):
    with atomic_folder(campaign.folder / "live") as tmp:
        np.savez(tmp / "masks.npz", masks=np.asarray(masks, bool))
        (tmp / "journal.json").write_text(json.dumps({"entries": entries}, indent=1))


def _next_seq(campaign, entries):
    return max([campaign.state.get("journal_applied", 0)] + [e["seq"] for e in entries]) + 1


def pool_url(campaign, xal_id):
    """The image URL of pool image ``xal_id`` in Label Studio tasks."""
    return campaign._url(Path(campaign.config["pool_root"]) / campaign.pool["images"][xal_id])


def check_task(campaign, task):
    """The pool id of a Label Studio task made by ``connect``; refuses anything else.

    The task must name a pool image by ``data.xal_id`` and carry that image's own URL,
    so no request can make the campaign read a file outside its pool.
    """
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or "xal_id" not in data:
        raise CampaignError(f"task {_task_id(task)} has no data.xal_id: it was not made by "
                            "this campaign")
    try:
        xal_id = int(data["xal_id"])
    except (TypeError, ValueError):
        raise CampaignError(f"task {_task_id(task)}: data.xal_id {data['xal_id']!r} is not "
                            "an id") from None
    if not 0 <= xal_id < len(campaign.pool["images"]):
        raise CampaignError(f"task {_task_id(task)}: image id {xal_id} is not in the pool "
                            f"({len(campaign.pool['images'])} images)")
    if data.get("image") != pool_url(campaign, xal_id):
        raise CampaignError(f"task {_task_id(task)}: its image {data.get('image')!r} is not "
                            f"pool image {xal_id} ({pool_url(campaign, xal_id)!r})")
    return xal_id


def _task_id(task):
    return task.get("id", "?") if isinstance(task, dict) else "?"


def record_annotation(campaign, task, annotation, predicted=None):
    """Check one annotation of a task and write it to the journal (the model is untouched).

    Parameters
    ----------
    campaign : Campaign
    task, annotation : dict
        As Label Studio's webhooks send them (``ANNOTATION_CREATED`` / ``_UPDATED``).
    predicted : str, optional
        The class the serving model predicted for the image before it was labelled
        (the honest estimate of its accuracy that ``status`` reports).

    Returns
    -------
    dict
        The journal entry (``id``, ``label``, ``roi`` ...), or the deletion entry of a
        cancelled (skipped) annotation.

    Raises
    ------
    CampaignError
        For a task not made by the campaign, or an annotation the import rules refuse
        (the message says which rule); the journal is unchanged then.
    """
    xal_id = check_task(campaign, task)
    if not isinstance(annotation, dict):
        raise CampaignError(f"task {_task_id(task)}: the annotation is not an object")
    if annotation.get("was_cancelled"):  # skipped: no label from this annotation
        gone = record_deletion(campaign, [annotation.get("id")])
        return gone[0] if gone else {"id": xal_id, "label": None}
    expected = {xal_id: {"image_url": pool_url(campaign, xal_id),
                         "size": campaign._original_size(xal_id)}}
    one = {"id": _task_id(task), "data": task["data"], "annotations": [annotation]}
    try:
        answer, = parse_export([one], expected, campaign.classes)
    except AnnotationImportError as exc:
        raise CampaignError(str(exc)) from None
    h, w = campaign.config["image_size"]
    mask, roi_from = None, None
    if answer.mask is not None:
        mask = resize_mask(answer.mask, (h, w))
    else:  # as a file import: the manifest's mask when the expert drew none
        mask = campaign._dataset([xal_id]).mask(0)
        roi_from = "manifest" if mask is not None else None
    with hold(campaign.folder, "a live annotation"):
        entries, masks = read_journal(campaign)
        keep = [k for k, e in enumerate(entries) if e["id"] != xal_id]
        entry = {"seq": _next_seq(campaign, entries), "id": xal_id, "label": answer.label,
                 "time": answer.time or now(), "annotator": answer.annotator,
                 "roi": mask is not None and bool(mask.any()),
                 "annotated": mask is not None, "ls_task": task.get("id"),
                 "ls_annotation": annotation.get("id"), "predicted": predicted,
                 **({"roi_from": roi_from} if roi_from else {})}
        new_mask = np.zeros((1, h, w), bool) if mask is None else mask[None]
        _write_journal(campaign, [entries[k] for k in keep] + [entry],
                       np.concatenate([masks[keep], new_mask]))
    return entry


def record_deletion(campaign, annotation_ids):
    """Journal that the labels given by these Label Studio annotations are gone.

    An image loses its label only if its current label came from one of them (another
    annotation of the same task, imported later, keeps it). Returns the deletion
    entries written, one per image that lost its label.
    """
    ids = {a for a in annotation_ids if a is not None}
    with hold(campaign.folder, "a live annotation"):
        entries, masks = read_journal(campaign)
        source = {e["id"]: e.get("ls_annotation") for e in campaign.state["labelled"]}
        for e in entries:
            source[e["id"]] = e.get("ls_annotation") if e["label"] is not None else None
        gone = sorted(i for i, a in source.items() if a is not None and a in ids)
        if not gone:
            return []
        keep = [k for k, e in enumerate(entries) if e["id"] not in gone]
        seq = _next_seq(campaign, entries)
        new = [{"seq": seq + k, "id": i, "label": None, "time": now()}
               for k, i in enumerate(gone)]
        h, w = campaign.config["image_size"]
        _write_journal(campaign, [entries[k] for k in keep] + new,
                       np.concatenate([masks[keep], np.zeros((len(new), h, w), bool)]))
        return new


def labelled_now(campaign):
    """Ids with a label once the journal is applied (the trained set's and the journal's)."""
    entries, _ = read_journal(campaign)
    ids = {e["id"] for e in campaign.state["labelled"]}
    for e in entries:
        (ids.add if e["label"] is not None else ids.discard)(e["id"])
    return ids


# --- retraining ----------------------------------------------------------------------------

def retrain(campaign, lock=None):
    """Fold the journal into the labelled set, fit a new learner on all of it, save.

    Parameters
    ----------
    campaign : Campaign
    lock : context manager, optional
        Held while the journal is read and while the new state is written, not while
        the network trains (a server's webhooks keep writing the journal meanwhile;
        what they write then waits for the next training).

    Returns
    -------
    dict or None
        ``n_changes`` (journal entries applied), ``n_labelled``, ``agreement`` (share
        of new labels the serving model had predicted; None without predictions) and
        ``round``; None when the journal is empty.
    """
    lock = lock if lock is not None else contextlib.nullcontext()
    with hold(campaign.folder, "retrain"):
        with lock:
            entries, masks = read_journal(campaign)
            before = campaign.state
            old_masks, old_annotated = campaign._roi_masks(), campaign._roi_annotated()
        if not entries:
            return None
        labelled = {e["id"]: e for e in before["labelled"]}
        rois = dict(zip(labelled, zip(old_masks, old_annotated)))
        for e, m in zip(entries, masks):
            if e["label"] is None:
                labelled.pop(e["id"], None)
                rois.pop(e["id"], None)
                continue
            labelled[e["id"]] = {
                "id": e["id"], "label": e["label"], "batch": LIVE_BATCH, "time": e["time"],
                "annotator": e["annotator"], "roi": e["roi"], "source": "label-studio",
                "ls_task": e["ls_task"], "ls_annotation": e["ls_annotation"],
                **({"roi_from": e["roi_from"]} if "roi_from" in e else {})}
            rois[e["id"]] = (m, e["annotated"])
        order = list(labelled)
        h, w = campaign.config["image_size"]
        roi_masks = (np.stack([rois[i][0] for i in order]) if order
                     else np.zeros((0, h, w), bool))
        annotated = np.array([bool(rois[i][1]) for i in order], bool)
        learner, rounds = None, before["rounds"]
        if order:
            learner = ActiveLearner(campaign._template(), campaign._strategy()[0],
                                    random_state=campaign.config["random_state"],
                                    roi_model=campaign._roi_template())
            learner.fit(campaign._images(order), np.array([labelled[i]["label"] for i in order]),
                        roi_masks=with_missing(roi_masks, annotated))
            judged = [(e["predicted"], e["label"]) for e in entries
                      if e["label"] is not None and e.get("predicted")]
            rounds = rounds + [{
                "batches": [], "live": True, "time": now(), "n_imported": len(entries),
                "n_labelled": len(order),
                "agreement": float(np.mean([p == t for p, t in judged])) if judged else None,
                "n_judged": len(judged), "roi_model": roi_cross_validated(campaign, learner)}]
        labels_in = {e["id"] for e in entries if e["label"] is not None}
        pending = {b: [i for i in ids if i not in labels_in]
                   for b, ids in before["pending"].items()}
        state = dict(before, labelled=[labelled[i] for i in order], rounds=rounds,
                     pending={b: ids for b, ids in pending.items() if ids},
                     journal_applied=max(e["seq"] for e in entries))
        with lock:
            campaign._save_state(state, roi_masks, learner, annotated)
            campaign._learner = learner
            rest, rest_masks = read_journal(campaign)  # what came during the training
            _write_journal(campaign, rest, rest_masks)
        return {"n_changes": len(entries), "n_labelled": len(order),
                "agreement": rounds[-1]["agreement"] if learner is not None else None,
                "round": len(rounds)}


# --- the pool's order and predictions ----------------------------------------------------

class Ranking:
    """The strategy's order of the unlabelled pool under one model, and its predictions.

    ``score(xal_id)`` is the image's place in that order divided by the number of
    images ranked: 0 for the image the strategy wants labelled first, rising towards 1;
    labelled images (and those not ranked) score 1. Sorting Label Studio's tasks by
    prediction score, ascending, gives the strategy's order.
    """

    def __init__(self, version, order, predictions, method):
        self.version, self.method = version, method
        self.order = [int(i) for i in order]
        self.place = {i: k for k, i in enumerate(self.order)}
        self.predictions = predictions  # xal_id -> (class, probability, box or None)

    def score(self, xal_id):
        k = self.place.get(int(xal_id))
        return 1.0 if k is None else k / max(len(self.order), 1)


def model_version(campaign):
    """The name Label Studio files predictions under: one per trained model."""
    return f"{VERSION_PREFIX}{len(campaign.state['rounds'])}"


def rank_pool(campaign, top=DEFAULT_TOP, labelled=None, chunk=256):
    """Rank the unlabelled pool by the campaign's strategy and predict every image of it.

    The strategy chooses the first ``top`` images (a batch strategy such as
    ``dual_cluster`` picks them as one diverse batch, in its order); the rest follow
    by the model's uncertainty (the campaign's measure, entropy by default). Before
    any label, the order is a seeded random permutation and nothing is predicted.
    Each prediction is the class, its probability and a box in the image's own
    pixels: around the ROI the ROI model draws, else around the Grad-CAM's peak
    region (the same box a file batch pre-draws). ``labelled``: the ids to leave out
    (default :func:`labelled_now`); ``chunk``: images scored at a time, so memory
    does not grow with the pool.
    """
    taken = labelled_now(campaign) if labelled is None else labelled
    candidates = np.array([i for i in range(len(campaign.pool["images"])) if i not in taken],
                          dtype=int)
    learner = campaign.learner()
    version = model_version(campaign)
    if learner is None or len(candidates) == 0:
        rng = np.random.default_rng(campaign.config["random_state"])
        return Ranking(version, rng.permutation(candidates), {},
                       "a seeded random order: no labelled images yet")
    pool = campaign._dataset(candidates)
    k = min(int(top), len(candidates))
    func, kwargs, words = campaign._strategy()
    if accepts_keyword(func, "roi_masks"):
        kwargs["roi_masks"] = manifest_rois(pool)
    chosen, _ = learner.query(pool, n_instances=k, **kwargs)
    predictions, uncertainty = {}, np.empty(len(candidates))
    model = learner.roi_model_
    for start in range(0, len(candidates), chunk):
        ids = candidates[start:start + chunk]
        part = campaign._dataset(ids)
        s = score_pool(learner, part, return_maps=True,
                       uncertainty=campaign.config["strategy"]["uncertainty"])
        drawn = model.predict(part) if model is not None and hasattr(model, "predict") else None
        uncertainty[start:start + len(ids)] = s.uncertainty
        for j, xal_id in enumerate(ids):
            col = int(np.argmax(s.proba[j]))
            roi, _ = query_roi(part.mask(j), None if drawn is None else drawn[j])
            w, h = campaign._original_size(int(xal_id))
            box = pre_drawn_box(s.maps[j], roi, (h, w))
            predictions[int(xal_id)] = (campaign.classes[col], float(s.proba[j, col]), box, w, h)
    first = [int(candidates[j]) for j in chosen]
    picked = set(first)
    rest = [int(candidates[j]) for j in np.argsort(-uncertainty, kind="stable")
            if int(candidates[j]) not in picked]
    return Ranking(version, first + rest, predictions,
                   f"{words}: the first {k} by the strategy, the rest by uncertainty")
