"""Importing the expert's answers into a campaign: checked, all or nothing, then retrained."""

from pathlib import Path

import numpy as np
from sklearn.base import clone

from .._persist import read_json
from .._validation import with_missing
from ..datasets import resize_mask
from ..labelstudio import parse_export, read_label_csv, source_ids
from ..learner import ActiveLearner
from ..roi_model import roi_model_quality
from ._common import ROI_CV_FOLDS, CampaignError, now


def import_labels(campaign, source):
    """:meth:`Campaign.import_labels <xal_sklearn.campaign.Campaign.import_labels>` of
    ``campaign``: checked whole, then the labelled set, the learner and the state at once."""
    pending = {int(i): int(b) for b, ids in campaign.state["pending"].items() for i in ids}
    source = Path(source)
    imported = {e["id"]: e for e in campaign.state["labelled"]}
    in_file = source_ids(source)
    if not pending or (in_file and not in_file & set(pending)):
        refuse_import(campaign, source, pending, in_file & set(imported))
    expected = {}
    for batch in set(pending.values()):
        meta = read_json(campaign.folder / "batches" / f"{batch:03d}" / "batch.json")
        for img in meta["images"]:
            expected[img["id"]] = {"image_url": img["image_url"], "batch": batch,
                                   "size": (img["width"], img["height"]),
                                   "predicted": img["predicted"]}
    # one Label Studio project for several rounds: tasks already imported are skipped
    done = {i: (e["label"], batch_words(e["batch"])) for i, e in imported.items()}
    if source.suffix.lower() == ".csv":
        answers = read_label_csv(source, expected, campaign.classes, imported=done)
    else:
        answers = parse_export(source, expected, campaign.classes, imported=done)
    h, w = campaign.config["image_size"]
    new_masks = np.stack([resize_mask(a.mask, (h, w)) if a.mask is not None
                          else np.zeros((h, w), bool) for a in answers])
    # an answer without a drawn region is not an ROI annotation (nobody drew) unless
    # the manifest gave the image a mask: that one is carried into the labelled set
    new_annotated = np.array([a.mask is not None for a in answers], bool)
    roi_source = np.where(new_annotated, "expert", "").astype(object)
    data = campaign._dataset([a.xal_id for a in answers])
    for k in np.flatnonzero(~new_annotated):
        given = data.mask(int(k))
        if given is not None:
            new_masks[k], new_annotated[k], roi_source[k] = given, True, "manifest"
    X_new = campaign._images([a.xal_id for a in answers])
    y_new = np.array([a.label for a in answers])
    learner = campaign.learner()
    if learner is None:
        learner = ActiveLearner(campaign._template(), campaign._strategy()[0],
                                random_state=campaign.config["random_state"],
                                roi_model=campaign._roi_template())
        learner.fit(X_new, y_new, roi_masks=with_missing(new_masks, new_annotated))
    else:
        learner.teach(X_new, y_new, roi_masks=with_missing(new_masks, new_annotated))
    roi_cv = roi_cross_validated(campaign, learner)
    labelled_before = campaign.state["labelled"]
    entries = [{"id": a.xal_id, "label": a.label, "batch": expected[a.xal_id]["batch"],
                "time": a.time or now(), "annotator": a.annotator,
                "roi": bool(new_masks[k].any()), "source": source.name,
                **({"roi_from": "manifest"} if roi_source[k] == "manifest" else {})}
               for k, a in enumerate(answers)]
    predicted = [expected[a.xal_id]["predicted"] for a in answers]
    judged = [(p, a.label) for p, a in zip(predicted, answers) if p is not None]
    agreement = (float(np.mean([p == t for p, t in judged])) if judged else None)
    done_batches = {expected[a.xal_id]["batch"] for a in answers}
    labelled_ids = {a.xal_id for a in answers}
    released = [i for i, b in pending.items() if b in done_batches and i not in labelled_ids]
    masks_all = np.concatenate([campaign._roi_masks(), new_masks])
    annotated_all = np.concatenate([campaign._roi_annotated(), new_annotated])
    state = dict(campaign.state, labelled=labelled_before + entries,
                 pending={b: ids for b, ids in campaign.state["pending"].items()
                          if int(b) not in done_batches},
                 rounds=campaign.state["rounds"] + [{
                     "batches": sorted(done_batches), "time": now(),
                     "n_imported": len(entries), "n_labelled": len(labelled_before)
                     + len(entries), "agreement": agreement, "n_judged": len(judged),
                     "roi_model": roi_cv}])
    campaign._save_state(state, masks_all, learner, annotated_all)
    campaign._learner = learner
    with_roi = new_masks.reshape(len(new_masks), -1).any(1)
    return {"n_imported": len(entries), "n_with_roi": int(with_roi.sum()),
            "n_roi_from_manifest": int((with_roi & (roi_source == "manifest")).sum()),
            "released": released, "agreement": agreement,
        "n_skipped": len(in_file & set(imported)), "batches": sorted(done_batches)}


def batch_words(batch):
    """'batch 003', or where live labels came from (batch 0)."""
    return f"batch {batch:03d}" if batch else "Label Studio (live)"


def roi_cross_validated(campaign, learner):
    """The ROI model's quality on the labelled ROIs, cross-validated (None if none).

    Each of :data:`ROI_CV_FOLDS` folds of the annotated labelled images is drawn
    by a model trained on the others, so every image is judged unseen.
    """
    template = campaign._roi_template()
    annotated = learner.roi_annotated_
    if template is None or annotated.sum() < 2 * ROI_CV_FOLDS:
        return None
    from sklearn.model_selection import KFold

    X, masks = learner.X_training_[annotated], learner.roi_training_[annotated]
    dice, auc = np.full(len(X), np.nan), np.full(len(X), np.nan)
    folds = KFold(ROI_CV_FOLDS, shuffle=True, random_state=campaign.config["random_state"])
    for train, test in folds.split(X):
        model = clone(template).fit(X[train], masks[train])
        q = roi_model_quality(model, X[test], masks[test])
        dice[test], auc[test] = q.dice_per_image, q.roi_auc_per_image
    lesions = ~np.isnan(dice)
    return {"n": int(len(X)), "n_lesion": int(lesions.sum()), "folds": ROI_CV_FOLDS,
            "dice": float(np.nanmean(dice)) if lesions.any() else None,
            "roi_auc": float(np.nanmean(auc)) if lesions.any() else None}

def refuse_import(campaign, source, pending, seen_before):
    """Say why ``source`` cannot be imported: imported already, or no batch waits."""
    waiting = sorted(set(pending.values()))
    now = ("No batch is waiting for labels; run query for a new one." if not waiting else
           "Waiting for labels: " + ", ".join(f"batch {b:03d}" for b in waiting)
           + "; import its Label Studio export or filled to_label.csv.")
    if not seen_before:
        raise CampaignError(now if not waiting else
                            f"{source.name} holds no image of a pending batch. {now}")
    entries = [e for e in campaign.state["labelled"] if e["id"] in seen_before]
    said = []
    for batch in sorted({e["batch"] for e in entries}):
        rounds = [r for r in campaign.state["rounds"] if batch in r["batches"]]
        files = sorted({e.get("source", "?") for e in campaign.state["labelled"]
                        if e["batch"] == batch})
        when = rounds[-1]["time"] if rounds else "?"
        n = sum(e["batch"] == batch for e in campaign.state["labelled"])
        said.append(f"{batch_words(batch)} was imported on {when} ({n} labels, from "
                    f"{', '.join(files)})")
    raise CampaignError(f"{source.name} holds labels that were already imported: "
                        + "; ".join(said) + f". {now}")
