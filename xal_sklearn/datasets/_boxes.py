"""Bounding-box annotations -> ROI masks (VinDr-CXR and SIIM-COVID-19 layouts)."""

import ast
import csv
import math
from collections import defaultdict

import numpy as np

from ._io import DataLoadError

__all__ = ["boxes_to_masks", "read_vindr_boxes", "parse_siim_boxes"]


def _box_mask(boxes, shape):
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"Box {(x0, y0, x1, y1)} has no area (need x_max > x_min, y_max > y_min).")
        c0, c1 = max(0, math.floor(x0)), min(w, math.ceil(x1))
        r0, r1 = max(0, math.floor(y0)), min(h, math.ceil(y1))
        mask[r0:r1, c0:c1] = True
    return mask


def boxes_to_masks(boxes, image_shape, box_format="xyxy"):
    """Rasterise bounding boxes into ROI masks; the ROI is the union of the boxes.

    Parameters
    ----------
    boxes : sequence of array-like (k_i, 4)
        One entry per image; coordinates in pixels of that image, ``(x_min,
        y_min, x_max, y_max)`` (``box_format="xyxy"``, VinDr-CXR) or ``(x, y,
        width, height)`` (``"xywh"``, SIIM-COVID-19). ``k_i = 0`` gives an
        empty mask. A pixel belongs to the ROI when it overlaps a box; boxes
        reaching past the border are clipped.
    image_shape : (height, width)

    Returns
    -------
    ndarray of bool, shape (n_images, height, width)
    """
    if box_format not in ("xyxy", "xywh"):
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}.")
    out = np.zeros((len(boxes),) + tuple(image_shape), dtype=bool)
    for i, b in enumerate(boxes):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        if box_format == "xywh":
            b = np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]])
        out[i] = _box_mask(b, image_shape)
    return out


def read_vindr_boxes(path):
    """Read a VinDr-CXR style box CSV into ``{image_id: array (k, 4) xyxy}``.

    Columns ``image_id, class_name, x_min, y_min, x_max, y_max`` (others are
    ignored); several rows per image are merged, and rows without coordinates
    (``class_name`` "No finding") give an image with zero boxes, which is an
    annotated image without a lesion.
    """
    boxes = defaultdict(list)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"image_id", "x_min", "y_min", "x_max", "y_max"} - set(reader.fieldnames or ())
            if missing:
                raise DataLoadError(f"{path}: missing column(s) {sorted(missing)}.")
            for line, row in enumerate(reader, start=2):
                coords = [row[k].strip() for k in ("x_min", "y_min", "x_max", "y_max")]
                boxes[row["image_id"]]  # an image with only "No finding" rows still counts
                if all(c == "" or c.lower() == "nan" for c in coords):
                    continue
                try:
                    boxes[row["image_id"]].append([float(c) for c in coords])
                except ValueError:
                    raise DataLoadError(
                        f"{path}, line {line}: bad box coordinates {coords}.") from None
    except OSError as exc:
        raise DataLoadError(f"Could not read box file {path}: {exc}") from exc
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in boxes.items()}


def parse_siim_boxes(text):
    """SIIM-COVID-19 ``boxes`` cell -> array (k, 4) of ``x_min, y_min, x_max, y_max``.

    The cell holds a list of ``{'x': .., 'y': .., 'width': .., 'height': ..}``
    (Python or JSON quoting); empty, "nan" or "[]" means no boxes.
    """
    text = (text or "").strip()
    if text in ("", "[]") or text.lower() == "nan":
        return np.zeros((0, 4))
    try:
        items = ast.literal_eval(text)
        rows = [[float(b["x"]), float(b["y"]), float(b["x"]) + float(b["width"]),
                 float(b["y"]) + float(b["height"])] for b in items]
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise DataLoadError(f"Could not parse boxes {text[:80]!r}: {exc}") from exc
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)
