"""Property-based and fuzz tests (hypothesis), each with a small fixed example budget."""

import string
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xal_sklearn import normalized_uncertainty, score_pool
from xal_sklearn.alignment import ALIGNMENT_METRICS
from xal_sklearn import alignment as alignment_module
from xal_sklearn.datasets import DataLoadError, load_image_folder
from xal_sklearn.strategies import top_k

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
PUBLIC_METRICS = {name: getattr(alignment_module, name) for name in ALIGNMENT_METRICS}


@st.composite
def maps_and_masks(draw):
    n = draw(st.integers(1, 4))
    h = draw(st.integers(2, 7))
    w = draw(st.integers(2, 7))
    maps = draw(arrays(np.float64, (n, h, w), elements=st.floats(0, 1)))
    masks = draw(arrays(np.bool_, (n, h, w)))
    return maps, masks


@FAST
@given(maps_and_masks())
def test_alignment_range_nan_and_mask_encoding(data):
    maps, masks = data
    empty = ~masks.reshape(len(masks), -1).any(axis=1)
    for name, metric in PUBLIC_METRICS.items():
        got = metric(maps, masks)
        assert got.shape == (len(maps),)
        assert np.all(np.isnan(got[empty])), name  # NaN exactly where the mask is empty
        finite = got[~np.isnan(got)]
        assert np.all((finite >= -1e-12) & (finite <= 1 + 1e-12)), name
        if name != "roi_auc":  # roi_auc is also undefined for a mask with no background
            assert not np.isnan(got[~empty]).any(), name
        for encoded in (masks.astype(np.uint8), masks.astype(np.uint8) * 255,
                        masks.astype(np.float32)):
            np.testing.assert_array_equal(metric(maps, encoded), got, err_msg=name)


@FAST
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 5)),
              elements=st.floats(0.01, 10)), st.randoms(use_true_random=False))
def test_uncertainty_range_and_class_permutation(raw, rnd):
    proba = raw / raw.sum(1, keepdims=True)
    perm = list(range(proba.shape[1]))
    rnd.shuffle(perm)
    for method in ("entropy", "margin", "least_confident"):
        u = normalized_uncertainty(proba, method)
        assert np.all((u >= -1e-12) & (u <= 1 + 1e-12))
        np.testing.assert_allclose(normalized_uncertainty(proba[:, perm], method), u,
                                   atol=1e-12)


@FAST
@given(arrays(np.float64, st.integers(1, 30), elements=st.sampled_from([0.0, 0.5, 1.0, 0.25])),
       st.integers(0, 2 ** 31 - 1), st.data())
def test_top_k_distinct_best_and_deterministic(scores, seed, data):
    k = data.draw(st.integers(1, len(scores)))
    idx = top_k(scores, k, random_state=seed)
    assert len(set(idx.tolist())) == k
    np.testing.assert_array_equal(idx, top_k(scores, k, random_state=seed))
    # nothing left out scores higher than anything chosen
    rest = np.setdiff1d(np.arange(len(scores)), idx)
    assert not len(rest) or scores[rest].max() <= scores[idx].min()


LAYOUTS = ["float16", "float32", "float64", "uint8", "int16", "int32", "strided", "reversed",
           "transposed"]


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(LAYOUTS), st.integers(1, 20), st.integers(0, 10 ** 6))
def test_score_pool_any_dtype_and_layout_matches_float32(fitted_net, layout, n, seed):
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 4, size=(n, 1, 32, 32)).astype(np.float32) / 4  # exact in float16
    masks = rng.rand(n, 32, 32) > 0.7
    if layout in ("uint8", "int16", "int32"):
        base = np.round(base * 4)
        X = base.astype(layout)
    elif layout == "strided":
        X = np.repeat(base, 2, axis=0)[::2]
    elif layout == "reversed":
        X = base[::-1].copy()[::-1]
    elif layout == "transposed":
        X = base.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
    else:
        X = base.astype(layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = score_pool(fitted_net, X, masks, progress=False)
        ref = score_pool(fitted_net, np.ascontiguousarray(base), masks, progress=False)
    np.testing.assert_allclose(got.combined, ref.combined, atol=1e-5)
    np.testing.assert_allclose(got.proba, ref.proba, atol=1e-5)


# --- fuzzed inputs: only the documented errors may come out ----------------------------

CSV_TEXT = st.text(alphabet=string.printable + "éü\ufeff", max_size=300)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(CSV_TEXT)
def test_fuzzed_manifest_raises_only_data_load_error(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "labels.csv").write_text(text, encoding="utf-8")
    try:
        data = load_image_folder(root, cache=False)
    except DataLoadError:
        return
    assert len(data.y) >= 1  # only possible when rows point to real images (none here)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".dcm",
                                                  ".nii"]),
       st.booleans())
def test_fuzzed_image_bytes_raise_only_data_load_error(tmp_path_factory, payload, suffix,
                                                       truncate_png):
    from PIL import Image

    root = tmp_path_factory.mktemp("img")
    if truncate_png:  # a real image cut short, as an interrupted copy leaves it
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "full.png")
        payload = (root / "full.png").read_bytes()[: max(1, len(payload) % 60)]
    (root / f"x{suffix}").write_bytes(payload)
    (root / "labels.csv").write_text(f"image,label\nx{suffix},a\n")
    with pytest.raises(DataLoadError):
        load_image_folder(root, cache=False)
