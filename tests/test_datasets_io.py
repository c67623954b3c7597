"""Loaders: DICOM (pydicom's bundled files and files written here), image folders,
boxes, NIfTI volumes. Pixel values are checked, not only shapes."""

import time

import nibabel as nib
from nibabel.testing import data_path as nibabel_data_path
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

from xal_sklearn.datasets import (DataLoadError, boxes_to_masks, load_image_folder,
                                  load_nifti_slices, parse_siim_boxes, read_dicom, read_image,
                                  read_vindr_boxes)


def write_dicom(path, pixels, photometric="MONOCHROME2", compress=False, **attrs):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=16)
    for key, value in attrs.items():
        setattr(ds, key, value)
    if compress:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


RAW = np.array([[0, 100], [200, 300]], dtype=np.uint16)


def linear_window(x, c, w):
    """DICOM PS3.3 C.11.2.1.2.1, scaled to [0, 1]."""
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)


# --- DICOM -------------------------------------------------------------------------

def test_dicom_rescale_and_header_window(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW, RescaleSlope=2, RescaleIntercept=-100,
                       WindowCenter=200, WindowWidth=400)
    hu = RAW * 2.0 - 100  # -100, 100, 300, 500
    np.testing.assert_allclose(read_dicom(path), linear_window(hu, 200, 400), atol=1e-6)
    assert read_dicom(path)[0, 1] == pytest.approx(0.2506, abs=1e-4)


def test_dicom_given_window_full_range_and_monochrome1(tmp_path):
    path = write_dicom(tmp_path / "b.dcm", RAW, RescaleSlope=2, RescaleIntercept=-100,
                       WindowCenter=200, WindowWidth=400)
    hu = RAW * 2.0 - 100
    np.testing.assert_allclose(read_dicom(path, window=(100, 201)), linear_window(hu, 100, 201),
                               atol=1e-6)
    np.testing.assert_allclose(read_dicom(path, window=None), (hu + 100) / 600, atol=1e-6)
    inverted = write_dicom(tmp_path / "c.dcm", RAW, photometric="MONOCHROME1")
    np.testing.assert_allclose(read_dicom(inverted), 1 - RAW / 300.0, atol=1e-6)
    with pytest.raises(ValueError, match="window"):
        read_dicom(path, window="soft tissue")


def test_dicom_bundled_files_and_compression():
    mr = read_dicom(get_testdata_file("MR_small.dcm"))  # window 600 / 1600 in the header
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    np.testing.assert_allclose(mr, linear_window(ds.pixel_array.astype(float), 600, 1600),
                               atol=1e-6)
    np.testing.assert_array_equal(read_dicom(get_testdata_file("MR_small_RLE.dcm")), mr)
    ct = read_dicom(get_testdata_file("CT_small.dcm"))  # no window: full HU range
    ct_ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ct_ds.pixel_array * 1.0 - 1024
    np.testing.assert_allclose(ct, (hu - hu.min()) / np.ptp(hu), atol=1e-6)


def test_dicom_multiframe_and_rle_written_here(tmp_path):
    frames = np.stack([RAW, RAW + 10, RAW + 20])
    path = write_dicom(tmp_path / "m.dcm", frames, compress=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    allf = read_dicom(path)
    assert allf.shape == (3, 2, 2)
    np.testing.assert_allclose(allf, (frames - 0) / 320.0, atol=1e-6)
    np.testing.assert_allclose(read_dicom(path, frame=2), (RAW + 20) / 320.0, atol=1e-6)
    with pytest.raises(DataLoadError, match=r"3 frame\(s\); frame=5"):
        read_dicom(path, frame=5)


def test_dicom_truncated_file_names_the_file():
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(DataLoadError, match="MR_truncated.dcm"):
        read_dicom(path)


# --- image files --------------------------------------------------------------------

def test_read_image_modes(tmp_path):
    gray8 = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g.png")
    np.testing.assert_allclose(read_image(tmp_path / "g.png")[0], gray8 / 255.0)
    gray16 = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png")[0], gray16 / 65535.0, atol=1e-6)
    Image.fromarray(gray16).save(tmp_path / "g16.tif")
    np.testing.assert_allclose(read_image(tmp_path / "g16.tif")[0], gray16 / 65535.0, atol=1e-6)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    Image.fromarray(rgba).save(tmp_path / "c.png")
    np.testing.assert_allclose(read_image(tmp_path / "c.png")[0], 0.299, atol=1e-6)
    rgb = read_image(tmp_path / "c.png", as_gray=False)
    assert rgb.shape == (3, 2, 2)
    np.testing.assert_allclose(rgb[:, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(read_image(tmp_path / "g.png", as_gray=False)[2], gray8 / 255.0)
    Image.fromarray(gray8).save(tmp_path / "g.bmp")
    np.testing.assert_allclose(read_image(tmp_path / "g.bmp")[0], gray8 / 255.0)
    flat = np.full((8, 8), 128, np.uint8)
    Image.fromarray(flat).save(tmp_path / "g.jpg", quality=95)
    np.testing.assert_allclose(read_image(tmp_path / "g.jpg")[0], 128 / 255.0, atol=2 / 255)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataLoadError, match="bad.png"):
        read_image(tmp_path / "bad.png")


# --- manifest folders ------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    rng = np.random.RandomState(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    lines = ["image,mask,label,group"]
    for i in range(6):
        img = (rng.rand(16, 20) * 255).astype(np.uint8)
        mask = np.zeros((16, 20), np.uint8)
        mask[4:8, 5 + i:10 + i] = 255
        Image.fromarray(img).save(tmp_path / f"img/{i}.png")
        Image.fromarray(mask).save(tmp_path / f"msk/{i}.png")
        lines.append(f"img/{i}.png,{'msk/%d.png' % i if i != 5 else ''},{['benign', 'malignant'][i % 2]},"
                     f"p{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_load_image_folder_values(folder, tmp_path):
    d = load_image_folder(folder, cache=False)
    assert d.X.shape == (6, 1, 16, 20) and d.X.dtype == np.float32
    np.testing.assert_allclose(d.X[2, 0], np.asarray(Image.open(folder / "img/2.png")) / 255.0)
    np.testing.assert_array_equal(d.y, [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(d.target_names, ["benign", "malignant"])
    assert d.roi_masks[3, 4:8, 8:13].all() and d.roi_masks[3].sum() == 20
    np.testing.assert_array_equal(d.roi_available, [True] * 5 + [False])
    np.testing.assert_array_equal(d.groups, ["p0", "p0", "p1", "p1", "p2", "p2"])
    small = load_image_folder(folder, image_size=(8, 10), cache=False)
    assert small.X.shape == (6, 1, 8, 10) and small.roi_masks.shape == (6, 8, 10)
    nearest = np.asarray(Image.open(folder / "msk/0.png").resize((10, 8), Image.NEAREST)) > 0
    np.testing.assert_array_equal(small.roi_masks[0], nearest)
    assert nearest.sum() > 0


def test_mixed_formats_in_one_manifest(folder):
    write_dicom(folder / "img/d.dcm", np.full((16, 20), 50, np.uint16), WindowCenter=50,
                WindowWidth=101)
    nib.save(nib.Nifti1Image(np.full((16, 20), 3.0, np.float32), np.eye(4)), folder / "img/n.nii.gz")
    text = (folder / "labels.csv").read_text() + "img/d.dcm,,benign,p9\nimg/n.nii.gz,,malignant,p9\n"
    (folder / "labels.csv").write_text(text)
    d = load_image_folder(folder, cache=False)
    assert len(d.y) == 8
    np.testing.assert_allclose(d.X[6], 0.505, atol=1e-6)  # (50 - 49.5) / 100 + 0.5
    assert not d.roi_available[6:].any()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("img/3.png", "img/33.png"), r"line 5: image file .*33.png does not exist"),
    (lambda t: t.replace("msk/1.png", "msk/11.png"), r"line 3: mask file .*11.png does not exist"),
    (lambda t: t.replace("malignant,p0", "cyst,p0"), r"line 3: unknown label 'cyst'"),
    (lambda t: t.splitlines()[0] + "\n", "has no rows"),
    (lambda t: t.replace("image,", "picture,"), r"lacks column\(s\) \['image'\]"),
])
def test_bad_manifest_rows(folder, edit, message):
    (folder / "labels.csv").write_text(edit((folder / "labels.csv").read_text()))
    with pytest.raises(DataLoadError, match=message):
        load_image_folder(folder, classes=["benign", "malignant"], cache=False)


def test_bad_files_and_skip(folder):
    (folder / "img/2.png").write_bytes(b"garbage")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "msk/4.png")
    with pytest.raises(DataLoadError, match=r"line 4: Could not read image file .*2.png"):
        load_image_folder(folder, cache=False)
    with pytest.warns(UserWarning, match="Skipped 2 of 6 manifest rows"):
        d = load_image_folder(folder, on_error="skip", cache=False)
    assert len(d.y) == 4 and "img/2.png" not in d.filenames
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(folder / "img/2.png")
    with pytest.raises(DataLoadError, match=r"line 6: mask .*4.png is 5x5 but the image is"):
        load_image_folder(folder, cache=False, on_error="raise")


def test_cache_second_load_and_invalidation(folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_image_folder(folder, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    t = time.perf_counter()
    second = load_image_folder(folder, cache_dir=cache)
    assert time.perf_counter() - t < 5
    for key in ("X", "y", "roi_masks", "roi_available", "groups", "filenames", "target_names"):
        np.testing.assert_array_equal(first[key], second[key])
    time.sleep(0.01)
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(folder / "img/0.png")
    third = load_image_folder(folder, cache_dir=cache)
    assert third.X[0].max() == 0 and len(list(cache.iterdir())) == 2


# --- boxes ---------------------------------------------------------------------------

def test_boxes_to_masks_hand_computed():
    m = boxes_to_masks([[[1, 1, 3, 2]], [], [[0.5, 0, 1.5, 1], [4, 3, 9, 9]]], (4, 5))
    assert m.shape == (3, 4, 5)
    assert m[0].sum() == 2 and m[0, 1, 1:3].all()
    assert not m[1].any()
    assert m[2, 0, 0:2].all() and m[2, 3, 4] and m[2].sum() == 3
    xywh = boxes_to_masks([[[1, 1, 2, 1]]], (4, 5), box_format="xywh")
    np.testing.assert_array_equal(xywh[0], m[0])


def test_vindr_and_siim_layouts_in_manifest(tmp_path):
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((20, 40), 100, np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "boxes.csv").write_text(
        "image_id,class_name,x_min,y_min,x_max,y_max\n"
        "a,Nodule/Mass,0,0,10,10\na,Aortic enlargement,30,10,40,20\nb,No finding,,,,\n")
    (tmp_path / "labels.csv").write_text("image,label\na.png,1\nb.png,0\nc.png,0\n")
    boxes = read_vindr_boxes(tmp_path / "boxes.csv")
    assert boxes["a"].shape == (2, 4) and boxes["b"].shape == (0, 4)
    d = load_image_folder(tmp_path, boxes=tmp_path / "boxes.csv", image_size=(10, 20), cache=False)
    np.testing.assert_array_equal(d.roi_available, [True, True, False])  # c: nobody annotated
    assert d.roi_masks[0, :5, :5].all() and d.roi_masks[0, 5:, 15:].all()
    assert d.roi_masks[0].sum() == 50 and not d.roi_masks[1].any()
    (tmp_path / "siim.csv").write_text(
        "image,label,boxes\n"
        "a.png,1,\"[{'x': 10, 'y': 5, 'width': 20, 'height': 10}]\"\nb.png,0,\n")
    s = load_image_folder(tmp_path, manifest="siim.csv", cache=False)
    assert s.roi_masks[0, 5:15, 10:30].all() and s.roi_masks[0].sum() == 200
    np.testing.assert_array_equal(parse_siim_boxes('[{"x": 1, "y": 2, "width": 3, "height": 4}]'),
                                  [[1, 2, 4, 6]])
    with pytest.raises(DataLoadError, match="Could not parse boxes"):
        parse_siim_boxes("[{'x': 1}]")


# --- NIfTI ---------------------------------------------------------------------------

def _subject(tmp_path, name, flip=False):
    rng = np.random.RandomState(len(name))
    vol = rng.rand(12, 10, 6).astype(np.float32) * 100 + 1
    seg = np.zeros((12, 10, 6), np.int16)
    seg[2:6, 3:7, 1] = 1       # slice 1: 16 voxels
    seg[2:8, 3:9, 3] = 4       # slice 3: 36 voxels
    seg[0:2, 0:2, 4] = 2       # slice 4: 4 voxels
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    if flip:  # stored left-right flipped: canonical orientation must undo it
        affine = np.diag([-1.0, 1.0, 2.0, 1.0])
        affine[0, 3] = 11
        vol, seg = vol[::-1].copy(), seg[::-1].copy()
    for data, suffix in ((vol, "t1"), (vol * 2, "flair"), (seg, "seg")):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / f"{name}_{suffix}.nii.gz")
    return [str(tmp_path / f"{name}_t1.nii.gz"), str(tmp_path / f"{name}_flair.nii.gz")], \
        str(tmp_path / f"{name}_seg.nii.gz")


def test_nifti_slices_selection_labels_groups(tmp_path):
    vols_a, seg_a = _subject(tmp_path, "subjA")
    vols_b, seg_b = _subject(tmp_path, "subjB", flip=True)
    d = load_nifti_slices([vols_a, vols_b], [seg_a, seg_b])
    assert d.X.shape == (12, 2, 10, 12)  # 6 axial slices each, rows = y, cols = x
    np.testing.assert_array_equal(d.groups, ["subjA"] * 6 + ["subjB"] * 6)
    np.testing.assert_array_equal(d.y[:6], [0, 1, 0, 1, 1, 0])  # "roi": lesion present
    # canonical orientation: the flipped subject gives the same masks
    np.testing.assert_array_equal(d.roi_masks[:6], d.roi_masks[6:])
    np.testing.assert_allclose(d.X[:6], d.X[6:], atol=1e-6)
    assert d.roi_masks[3].sum() == 36
    big = load_nifti_slices([vols_a], [seg_a], min_roi_fraction=0.1)
    np.testing.assert_array_equal(big.slice_index, [1, 3])
    top = load_nifti_slices([vols_a, vols_b], [seg_a, seg_b], k_largest=1,
                            labels={"subjA": "HGG", "subjB": "LGG"}, roi_labels=(1, 4))
    np.testing.assert_array_equal(top.slice_index, [3, 3])
    np.testing.assert_array_equal(top.target_names[top.y], ["HGG", "LGG"])
    only_enh = load_nifti_slices([vols_a], [seg_a], roi_labels=(4,))
    assert only_enh.roi_masks[1].sum() == 0 and only_enh.roi_masks[3].sum() == 36
    # intensities: each modality clipped to its percentiles and scaled to [0, 1]
    assert d.X.min() >= 0 and d.X.max() <= 1 and d.X[:, 0].max() == pytest.approx(1.0)


ANAT = str(nibabel_data_path / "anatomical.nii")


def test_nifti_bundled_volume_and_errors(tmp_path):
    anat = nib.load(ANAT)
    seg = np.zeros(anat.shape, np.uint8)
    seg[10:20, 10:20, 5] = 1
    nib.save(nib.Nifti1Image(seg, anat.affine), tmp_path / "seg.nii.gz")
    d = load_nifti_slices([ANAT], [tmp_path / "seg.nii.gz"],
                          k_largest=1, image_size=32)
    assert d.X.shape == (1, 1, 32, 32) and d.roi_masks[0].any()
    with pytest.raises(DataLoadError, match="does not exist"):
        load_nifti_slices([tmp_path / "missing.nii"], [tmp_path / "seg.nii.gz"])
    nib.save(nib.Nifti1Image(seg[:-1], anat.affine), tmp_path / "short.nii.gz")
    with pytest.raises(DataLoadError, match="has shape"):
        load_nifti_slices([ANAT], [tmp_path / "short.nii.gz"])
