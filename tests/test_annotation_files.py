"""Real annotation files: several mask files per image, and COCO (polygons, RLE, boxes)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from xal_sklearn.datasets import DataLoadError, load_image_folder

H, W = 12, 16


def _folder(tmp_path, n=3, masks=None):
    (tmp_path / "img").mkdir()
    rng = np.random.RandomState(0)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "mask"])
        for i in range(n):
            Image.fromarray((rng.rand(H, W) * 255).astype(np.uint8)).save(
                tmp_path / "img" / f"{i}.png")
            w.writerow([f"img/{i}.png", "a" if i % 2 else "b", (masks or {}).get(i, "")])
    return tmp_path


def _mask_file(path, mask):
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def test_several_mask_files_give_their_union(tmp_path):
    ggo, effusion = np.zeros((H, W), bool), np.zeros((H, W), bool)
    ggo[1:4, 2:6], effusion[8:11, 10:15] = True, True
    _mask_file(tmp_path / "m" / "ggo.png", ggo)
    _mask_file(tmp_path / "m" / "eff.png", effusion)
    root = _folder(tmp_path, masks={0: "m/ggo.png;m/eff.png", 1: " m/eff.png ; "})
    data = load_image_folder(root, cache=False)
    np.testing.assert_array_equal(data.roi_masks[0], ggo | effusion)
    np.testing.assert_array_equal(data.roi_masks[1], effusion)
    assert data.roi_available.tolist() == [True, True, False]


def test_several_mask_files_errors_name_the_file(tmp_path):
    _mask_file(tmp_path / "m" / "ok.png", np.ones((H, W), bool))
    _mask_file(tmp_path / "m" / "small.png", np.ones((5, 5), bool))
    root = _folder(tmp_path, masks={2: "m/ok.png;m/small.png"})
    with pytest.raises(DataLoadError, match=r"line 4: mask .*small.png is 5x5 but the image "
                                            r"is 16x12"):
        load_image_folder(root, cache=False)
    text = (root / "labels.csv").read_text().replace("m/ok.png;m/small.png",
                                                     "m/ok.png;m/gone.png")
    (root / "labels.csv").write_text(text)
    with pytest.raises(DataLoadError, match=r"line 4: mask file .*gone.png does not exist"):
        load_image_folder(root, cache=False)


# --- COCO -------------------------------------------------------------------------------

def _coco(images, annotations, categories=("lesion", "device")):
    return {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(categories)]}


def _image(i, name=None, width=W, height=H):
    return {"id": 10 + i, "file_name": name or f"img/{i}.png", "width": width, "height": height}


def test_coco_polygons_rle_and_boxes_to_masks(tmp_path):
    root = _folder(tmp_path, n=4)
    blob = np.zeros((H, W), np.uint8)
    blob[2:5, 3:9] = 1
    compressed = mask_utils.encode(np.asfortranarray(blob))
    compressed["counts"] = compressed["counts"].decode()
    annotations = [
        # image 0: a square polygon and, of another category, a box
        {"id": 1, "image_id": 10, "category_id": 1,
         "segmentation": [[4, 2, 12, 2, 12, 8, 4, 8]], "bbox": [4, 2, 8, 6]},
        {"id": 2, "image_id": 10, "category_id": 2, "bbox": [0, 0, 2, 2]},
        # image 1: an uncompressed RLE, hand-computed in COCO's column-major order
        {"id": 3, "image_id": 11, "category_id": 1, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": [1, 2, H * W - 3]}},
        # image 2: a compressed RLE (as pycocotools writes it) and a box-only annotation
        {"id": 4, "image_id": 12, "category_id": 1, "segmentation": compressed},
        {"id": 5, "image_id": 12, "category_id": 1, "bbox": [13, 9, 2, 2]},
    ]
    (root / "ann.json").write_text(json.dumps(_coco(
        [_image(0), _image(1, "1.png"), _image(2)], annotations)))  # image 3 not in the file
    data = load_image_folder(root, coco="ann.json", roi_categories=["lesion"], cache=False)
    square = data.roi_masks[0]
    assert square[3:8, 5:12].all() and not square[0:2, 0:2].any()  # the box is a device
    assert abs(int(square.sum()) - 8 * 6) <= 8 * 2 + 6 * 2  # area within one boundary row
    expected = np.zeros((H, W), bool)
    expected[1:3, 0] = True  # counts [1, 2, ...]: pixels 1 and 2 down the first column
    np.testing.assert_array_equal(data.roi_masks[1], expected)  # matched by file name alone
    box = np.zeros((H, W), bool)
    box[9:11, 13:15] = True
    np.testing.assert_array_equal(data.roi_masks[2], (blob > 0) | box)
    assert data.roi_available.tolist() == [True, True, True, False]
    every = load_image_folder(root, coco="ann.json", cache=False)  # default: all categories
    assert every.roi_masks[0][0:2, 0:2].all()
    resized = load_image_folder(root, coco="ann.json", image_size=24, cache=False)
    assert resized.roi_masks.shape == (4, 24, 24) and resized.roi_masks[2].any()


def test_coco_image_listed_without_annotations_is_annotated_empty(tmp_path):
    root = _folder(tmp_path, n=2)
    (root / "ann.json").write_text(json.dumps(_coco([_image(0), _image(1)], [
        {"id": 1, "image_id": 10, "category_id": 2, "bbox": [0, 0, 3, 3]}])))
    data = load_image_folder(root, coco="ann.json", roi_categories="lesion", cache=False)
    assert data.roi_available.tolist() == [True, True] and not data.roi_masks.any()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["annotations"].append({"id": 77, "image_id": 10, "category_id": 1,
                                        "segmentation": [[0, 0, 40, 0, 40, 5]]}),
     "annotation 77: a polygon reaches (0..40, 0..5), outside the 16x12 image"),
    (lambda c: c["annotations"].append({"id": 78, "image_id": 10, "category_id": 1,
                                        "segmentation": {"size": [5, 5], "counts": [25]}}),
     "annotation 78: its RLE is of size 5x5 (width x height) but the image is 16x12"),
    (lambda c: c["annotations"].append({"id": 79, "image_id": 10, "category_id": 1,
                                        "segmentation": {"size": [H, W], "counts": [3, 4]}}),
     "annotation 79: its RLE counts add up to 7 pixels"),
    (lambda c: c["annotations"].append({"id": 80, "image_id": 10, "category_id": 9,
                                        "bbox": [0, 0, 1, 1]}),
     "annotation 80: category_id 9 is not among the file's categories"),
    (lambda c: c["annotations"].append({"id": 81, "image_id": 99, "category_id": 1,
                                        "bbox": [0, 0, 1, 1]}),
     "annotation 81: its image_id 99 is not among the file's images"),
    (lambda c: (c["images"].append(_image(5, "elsewhere/9.png")), c["annotations"].append(
        {"id": 82, "image_id": 15, "category_id": 1, "bbox": [0, 0, 1, 1]})),
     "annotation 82: its image 'elsewhere/9.png' (id 15) is not in the manifest"),
    (lambda c: c["annotations"].append({"id": 83, "image_id": 10, "category_id": 1}),
     "annotation 83: it has neither a segmentation nor a bbox"),
    (lambda c: c["images"][0].update(width=20),
     "COCO image 10 is 20x12 but the image file is 16x12"),
])
def test_bad_coco_files_name_the_annotation(tmp_path, edit, message):
    root = _folder(tmp_path, n=2)
    coco = _coco([_image(0), _image(1)], [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [1, 1, 3, 3]}])
    edit(coco)
    (root / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(DataLoadError) as info:
        load_image_folder(root, coco="ann.json", cache=False)
    assert message in str(info.value)


def test_coco_file_errors(tmp_path):
    root = _folder(tmp_path, n=1)
    (root / "broken.json").write_text('{"images": [')
    with pytest.raises(DataLoadError, match="Could not read COCO file .*broken.json"):
        load_image_folder(root, coco="broken.json", cache=False)
    (root / "odd.json").write_text('{"annotations": []}')
    with pytest.raises(DataLoadError, match="needs an 'images' list"):
        load_image_folder(root, coco="odd.json", cache=False)
    (root / "ok.json").write_text(json.dumps(_coco([_image(0)], [])))
    with pytest.raises(DataLoadError, match=r"roi_categories \['tumour'\] are not among"):
        load_image_folder(root, coco="ok.json", roi_categories=["tumour"], cache=False)
    many = _coco([_image(0)], [{"id": 100 + k, "image_id": 10, "category_id": 1,
                                "bbox": [0, 0, 99, 1]} for k in range(23)])
    (root / "many.json").write_text(json.dumps(many))
    with pytest.raises(DataLoadError) as info:
        load_image_folder(root, coco="many.json", cache=False)
    text = str(info.value)
    assert "23 problem(s)" in text and "annotation 119:" in text
    assert "annotation 120:" not in text and "... and 3 more." in text


def test_coco_cache_follows_the_file(tmp_path):
    root = _folder(tmp_path, n=1)
    coco = _coco([_image(0)], [{"id": 1, "image_id": 10, "category_id": 1,
                                "bbox": [0, 0, 4, 4]}])
    (root / "ann.json").write_text(json.dumps(coco))
    first = load_image_folder(root, coco="ann.json", cache_dir=tmp_path / "cache")
    coco["annotations"][0]["bbox"] = [0, 0, 8, 8]
    (root / "ann.json").write_text(json.dumps(coco))
    second = load_image_folder(root, coco="ann.json", cache_dir=tmp_path / "cache")
    assert first.roi_masks.sum() == 16 and second.roi_masks.sum() == 64
