"""A campaign's batch: the query's words and notes, and the folder the expert gets."""

import csv
import json
from pathlib import Path

import numpy as np

from .._persist import atomic_folder
from ..datasets import read_image
from ..labelstudio import label_config, make_task
from ..scoring import score_pool
from ._common import now


def roi_words(learner):
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


def query_notes(still_pending, allow_repeat, requested, n_candidates, n_labelled):
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


def write_batch(campaign, batch, ids, acquisition, method, progress, query_scores=None):
    """Write ``batches/NNN/`` of ``campaign`` for the images ``ids``, as one folder: the
    images at their size, Grad-CAM overlays, Label Studio tasks with pre-annotations,
    ``to_label.csv`` and ``batch.json`` (scores and where each box came from)."""
    from PIL import Image

    folder = campaign.folder / "batches" / f"{batch:03d}"
    learner = campaign.learner()
    data = campaign._dataset(ids)
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
            original = read_image(Path(campaign.config["pool_root"]) / data.images[k],
                                  as_gray=not campaign.config["rgb"])
            height, width = original.shape[1:]
            picture = np.moveaxis(original, 0, -1)
            picture = (picture[..., 0] if picture.shape[-1] == 1 else picture)
            image_path = (tmp / "images" / f"{xal_id:06d}.png")
            Image.fromarray(np.round(picture * 255).astype(np.uint8)).save(image_path)
            final = folder / "images" / f"{xal_id:06d}.png"
            overlay_final = folder / "overlays" / f"{xal_id:06d}.png"
            predicted, probability, box = None, None, None
            roi, roi_kind = query_roi(given[k], None if rois is None else rois[k])
            if scores is not None:
                col = int(np.argmax(scores.proba[k]))
                predicted, probability = campaign.classes[col], float(scores.proba[k, col])
                box = pre_drawn_box(scores.maps[k], roi, (height, width))
                save_overlay(tmp / "overlays" / f"{xal_id:06d}.png", picture,
                              scores.maps[k], predicted, probability, box, roi,
                              roi_kind.replace("_roi", " ROI"))
            else:
                save_overlay(tmp / "overlays" / f"{xal_id:06d}.png", picture, None,
                              None, None, None)
            image_url, overlay_url = campaign._url(final), campaign._url(overlay_final)
            score = float(acquisition[k]) if np.isfinite(acquisition[k]) else 0.0
            # the scan as the annotator knows it: its file as given at init, its own id
            original = str(Path(campaign.config["pool_root"]) / data.images[k])
            manifest_id = campaign._manifest_id(xal_id)
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
                         **logged_scores(query_scores, k),
                         "box": None if box is None else
                         (roi_kind if roi is not None else "attention")})
        (tmp / "tasks.json").write_text(json.dumps(tasks, indent=1))
        (tmp / "label_config.xml").write_text(label_config(campaign.classes))
        with open(tmp / "to_label.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["xal_id", "original_image", "manifest_id", "image",
                        "predicted_label", "label", "x_min", "y_min", "x_max", "y_max"])
            w.writerows(rows)
        (tmp / "batch.json").write_text(json.dumps(
            {"batch": batch, "created": now(), "method": method, "images": info},
            indent=1))
    return folder


def query_roi(given, drawn):
    """The pool ROI a query compared attention with, and its kind: the manifest's mask
    (``"manifest_roi"``), else the one the ROI model drew (``"predicted_roi"``; the ROI
    is None when neither has a region)."""
    if given is not None and given.any():
        return given, "manifest_roi"
    return (drawn if drawn is not None and drawn.any() else None), "predicted_roi"


def pre_drawn_box(cam, roi, size):
    """The box pre-drawn for the expert to correct, in pixels of an image of ``size``:
    around the pool ROI, else around where the classifier looked (``cam``'s peak)."""
    return attention_box(cam, size) if roi is None else mask_box(roi, size)


def attention_box(cam, size):
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


def logged_scores(scores, k):
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


def mask_box(mask, size):
    """Box (pixels of an image of ``size``) around a mask's largest connected region."""
    from scipy import ndimage

    regions, n = ndimage.label(mask)
    largest = 1 + int(np.argmax(ndimage.sum(mask, regions, index=np.arange(1, n + 1))))
    rows, cols = np.nonzero(regions == largest)
    sy, sx = size[0] / mask.shape[0], size[1] / mask.shape[1]
    return (cols.min() * sx, rows.min() * sy, (cols.max() + 1) * sx, (rows.max() + 1) * sy)


def save_overlay(path, picture, cam, predicted, probability, box, roi=None,
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
