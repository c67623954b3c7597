"""COCO annotation files (CVAT, Label Studio and most public sets export them) -> ROI masks.

pycocotools, the format's reference implementation, rasterises polygons and decodes
run-length encodings; this module checks the file first, so that a bad annotation
is reported by its id instead of surfacing as a wrong mask or a C-level error.
"""

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .._validation import list_problems
from ._boxes import boxes_to_masks
from ._io import DataLoadError

__all__ = ["CocoAnnotations", "check_coco_matches", "read_coco"]


@dataclass
class CocoAnnotations:
    """A checked COCO file: its images by file name and their ROI annotations.

    ``images`` maps each image's ``file_name`` to ``(id, width, height)``;
    ``annotations`` maps an image id to its annotations of the selected
    categories; ``categories`` are the selected category ids.
    """

    path: Path
    images: dict
    annotations: dict
    categories: set
    by_basename: dict = field(default_factory=dict)

    def image_for(self, name):
        """``(id, width, height)`` of the COCO image matching manifest path ``name``, or None.

        The full relative path is tried first, then the file name alone when only
        one COCO image has it.
        """
        key = PurePosixPath(str(name).replace("\\", "/")).as_posix()
        if key in self.images:
            return self.images[key]
        matches = self.by_basename.get(PurePosixPath(key).name, [])
        return self.images[matches[0]] if len(matches) == 1 else None

    def mask(self, image, shape):
        """The union of the selected annotations of ``image`` (an ``image_for`` result)."""
        image_id, width, height = image
        if (height, width) != tuple(shape):
            raise DataLoadError(f"{self.path}: COCO image {image_id} is {width}x{height} but "
                                f"the image file is {shape[1]}x{shape[0]}.")
        mask = np.zeros((height, width), dtype=bool)
        for ann in self.annotations.get(image_id, []):
            mask |= _annotation_mask(ann, width, height)
        return mask


def _decode(rle):
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' own numpy-2 copy-keyword notice
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _annotation_mask(ann, width, height):
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:  # polygons
        return _decode(mask_utils.merge(mask_utils.frPyObjects(seg, height, width)))
    if isinstance(seg, dict):  # RLE, uncompressed (counts: list) or compressed (str)
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) \
            else dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str)
                      else seg["counts"])
        return _decode(rle)
    x, y, w, h = (float(v) for v in ann["bbox"])  # boxes only: the box is the ROI
    return boxes_to_masks([np.array([[x, y, x + w, y + h]])], (height, width))[0]


def _check_annotation(ann, images):
    """What is wrong with one annotation, in words, or None."""
    if ann.get("image_id") not in images:
        return f"its image_id {ann.get('image_id')!r} is not among the file's images"
    width, height = images[ann["image_id"]]
    seg, bbox = ann.get("segmentation"), ann.get("bbox")
    if isinstance(seg, list) and seg:
        for polygon in seg:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(isinstance(v, (int, float)) for v in polygon)):
                return "a polygon must be a list of at least 3 x, y pairs"
            xs, ys = np.asarray(polygon[0::2], float), np.asarray(polygon[1::2], float)
            if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
                return "a polygon has a coordinate that is not finite"
            if xs.min() < 0 or ys.min() < 0 or xs.max() > width or ys.max() > height:
                return (f"a polygon reaches ({xs.min():g}..{xs.max():g}, {ys.min():g}.."
                        f"{ys.max():g}), outside the {width}x{height} image")
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2):
            return "an RLE needs 'size': [height, width]"
        if list(size) != [height, width]:
            return (f"its RLE is of size {size[1]}x{size[0]} (width x height) but the image "
                    f"is {width}x{height}")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts):
                return "RLE counts must be non-negative integers"
            if sum(counts) != width * height:
                return (f"its RLE counts add up to {sum(counts)} pixels but the image has "
                        f"{width * height}")
        elif not isinstance(counts, str) or not counts:
            return "RLE 'counts' must be a list of integers or a compressed string"
        return None
    if isinstance(bbox, list) and len(bbox) == 4:
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            return "its bbox must hold 4 numbers"
        if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
            return f"its bbox {bbox} is empty or not finite"
        if x < 0 or y < 0 or x + w > width or y + h > height:
            return f"its bbox {bbox} lies outside the {width}x{height} image"
        return None
    return "it has neither a segmentation nor a bbox"


def _raise_all(path, problems):
    if problems:
        raise DataLoadError(list_problems(f"COCO file {path}", problems))


def _select_categories(path, categories, roi_categories):
    by_name = {c["name"]: c["id"] for c in categories}
    if roi_categories is None:
        return set(by_name.values())
    wanted = [roi_categories] if isinstance(roi_categories, (str, int)) else list(roi_categories)
    ids, unknown = set(), []
    for c in wanted:
        if isinstance(c, str) and c in by_name:
            ids.add(by_name[c])
        elif not isinstance(c, str) and c in by_name.values():
            ids.add(c)
        else:
            unknown.append(c)
    if unknown:
        raise DataLoadError(f"COCO file {path}: roi_categories {unknown} are not among its "
                            f"categories {sorted(by_name)}.")
    return ids


def read_coco(path, roi_categories=None):
    """Read and check a COCO annotation file before any image is loaded.

    Parameters
    ----------
    path : path-like
    roi_categories : str, int or sequence of them, optional
        The categories (names or ids) whose annotations form the ROI; default all.

    Returns
    -------
    CocoAnnotations

    Raises
    ------
    DataLoadError
        A file that does not parse or lacks ``images``/``annotations``; and, listing
        every one by its annotation id, annotations whose polygon leaves the image,
        whose RLE has another size, whose image or category is unknown.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataLoadError(f"Could not read COCO file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations", []), list):
        raise DataLoadError(f"COCO file {path} needs an 'images' list and an 'annotations' "
                            "list.")
    problems, images, sizes = [], {}, {}
    for k, img in enumerate(data["images"]):
        try:
            image_id, name = img["id"], str(img["file_name"])
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"images[{k}]: needs id, file_name, width and height")
            continue
        if width < 1 or height < 1:
            problems.append(f"image {image_id}: size {width}x{height} is empty")
            continue
        key = PurePosixPath(name.replace("\\", "/")).as_posix()
        if key in images:
            problems.append(f"image {image_id}: file_name {name!r} appears twice")
            continue
        images[key], sizes[image_id] = (image_id, width, height), (width, height)
    categories = [c for c in data.get("categories") or [] if isinstance(c, dict)
                  and "id" in c and "name" in c]
    selected = _select_categories(path, categories, roi_categories)
    known_categories = {c["id"] for c in categories}
    annotations = {}
    for k, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict):
            problems.append(f"annotations[{k}]: not an object")
            continue
        name = f"annotation {ann.get('id', f'[{k}]')}"
        if known_categories and ann.get("category_id") not in known_categories:
            problems.append(f"{name}: category_id {ann.get('category_id')!r} is not among "
                            "the file's categories")
            continue
        problem = _check_annotation(ann, sizes)
        if problem:
            problems.append(f"{name}: {problem}")
        elif ann.get("category_id") in selected or not known_categories:
            annotations.setdefault(ann["image_id"], []).append(ann)
    _raise_all(path, problems)
    by_basename = {}
    for key in images:
        by_basename.setdefault(PurePosixPath(key).name, []).append(key)
    return CocoAnnotations(path, images, annotations, selected, by_basename)


def check_coco_matches(coco, image_names):
    """Refuse annotations of images that the manifest does not list (by annotation id)."""
    matched = {image[0] for image in map(coco.image_for, image_names) if image is not None}
    orphans = [(ann.get("id"), image_id) for image_id, anns in coco.annotations.items()
               if image_id not in matched for ann in anns]
    by_id = {v[0]: k for k, v in coco.images.items()}
    _raise_all(coco.path, [f"annotation {a}: its image {by_id[i]!r} (id {i}) is not in the "
                           "manifest" for a, i in orphans])
