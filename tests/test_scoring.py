import numpy as np
import pytest
import torch
from modAL.uncertainty import entropy_sampling, margin_sampling
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from xal_sklearn import (CNNClassifier, dual_criterion_sampling, gradcam, misalignment_sampling,
                         normalized_uncertainty, random_sampling, score_pool, soft_dice)


@pytest.fixture(scope="module")
def pool(phantoms):
    return phantoms.X[160:], phantoms.roi_masks[160:]


def two_pass(net, X, masks, alpha, method="entropy"):
    """The straightforward computation: predict_proba, then Grad-CAM, then Dice."""
    proba = net.predict_proba(X)
    u = normalized_uncertainty(proba, method)
    mis = 1 - soft_dice(gradcam(net, X), masks)
    return proba, u, mis, alpha * u + (1 - alpha) * mis


def test_fused_equals_two_pass(fitted_net, pool):
    X, M = pool
    s = score_pool(fitted_net, X, M, alpha=0.3, batch_size=17)
    proba, u, mis, combined = two_pass(fitted_net, X, M, 0.3)
    np.testing.assert_allclose(s.proba, proba, atol=1e-5)
    np.testing.assert_allclose(s.uncertainty, u, atol=1e-5)
    np.testing.assert_allclose(s.misalignment, mis, atol=1e-5)
    np.testing.assert_allclose(s.combined, combined, atol=1e-5)
    np.testing.assert_array_equal(s.y_pred, fitted_net.predict(X))
    assert s.roi_available.all() and "maps" not in s


def test_fused_equals_two_pass_random_models(rng):
    for seed in range(3):
        X = rng.rand(20, 2, 24, 20).astype(np.float32)
        masks = rng.rand(20, 24, 20) > 0.7
        net = CNNClassifier(n_classes=4, max_epochs=1, random_state=seed,
                            module__n_filters=(3, 5, 7)).fit(X, np.arange(20) % 4)
        s = score_pool(net, X, masks, alpha=0.6, return_maps=True, batch_size=6)
        proba, u, mis, combined = two_pass(net, X, masks, 0.6)
        np.testing.assert_allclose(s.combined, combined, atol=1e-5)
        np.testing.assert_allclose(s.maps, gradcam(net, X), atol=1e-6)


def test_gpu_style_whole_batches_equal_cpu_chunks(fitted_net, pool, monkeypatch):
    """On a GPU the engine runs whole batches in the module's layout; same results."""
    from xal_sklearn.gradcam import GradCAMEngine

    X, M = pool
    chunked = score_pool(fitted_net, X, M, batch_size=40, return_maps=True)
    monkeypatch.setattr(GradCAMEngine, "cpu_chunk_size", None)
    whole = score_pool(fitted_net, X, M, batch_size=40, return_maps=True)
    for key in ("proba", "uncertainty", "alignment", "combined", "maps"):
        np.testing.assert_allclose(whole[key], chunked[key], atol=1e-5)


def test_streaming_pools_equal_in_memory(fitted_net, pool, tmp_path):
    X, M = pool
    ref = score_pool(fitted_net, X, M, batch_size=16)
    xm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    xm[:] = X
    mm = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=bool, shape=M.shape)
    mm[:] = M
    x_lazy = np.load(tmp_path / "x.npy", mmap_mode="r")
    m_lazy = np.load(tmp_path / "m.npy", mmap_mode="r")
    via_memmap = score_pool(fitted_net, x_lazy, m_lazy, batch_size=16)

    class PairDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return torch.from_numpy(X[i]), M[i]

    via_dataset = score_pool(fitted_net, PairDataset(), batch_size=16, num_workers=0)
    for other in (via_memmap, via_dataset):
        for key in ("proba", "uncertainty", "alignment", "combined"):
            np.testing.assert_allclose(other[key], ref[key], atol=1e-6)
    idx_arr = dual_criterion_sampling(fitted_net, X, 10, roi_masks=M, random_state=0)
    idx_ds = dual_criterion_sampling(fitted_net, PairDataset(), 10, random_state=0)
    np.testing.assert_array_equal(idx_arr, idx_ds)


def test_alpha_one_equals_modal_entropy_sampling(fitted_net, pool):
    X, M = pool
    ours = dual_criterion_sampling(fitted_net, X, 15, roi_masks=M, alpha=1.0)
    theirs = entropy_sampling(fitted_net, X, n_instances=15)
    assert set(ours) == set(theirs)
    ours_m = dual_criterion_sampling(fitted_net, X, 15, roi_masks=M, alpha=1.0,
                                     uncertainty="margin")
    assert set(ours_m) == set(margin_sampling(fitted_net, X, n_instances=15))


@pytest.fixture(scope="module")
def shortcut_setup():
    """A net that takes a shortcut where one exists, and a pool half with the shortcut.

    Half of the training images carry a corner marker that gives the label away
    while their lesion is unrelated to it; the other half have no marker and
    their label is the lesion type. The net learns both cues: with a marker it
    looks at the marker, without one at the lesion.
    """
    from xal_sklearn.datasets import make_lesion_phantoms

    tags = make_lesion_phantoms(150, 32, shortcut=1.0, random_state=1)
    scans = make_lesion_phantoms(300, 32, shortcut=0.0, random_state=2)
    X_train, y_train = scans.X.copy(), scans.y.copy()
    X_train[:150] = np.where(tags.marker_masks[:, None], 0.95, scans.X[:150])
    y_train[:150] = tags.marker_class
    net = CNNClassifier(n_classes=3, max_epochs=20, random_state=0).fit(X_train, y_train)
    pool_tags = make_lesion_phantoms(80, 32, shortcut=1.0, random_state=3)
    pool = make_lesion_phantoms(80, 32, shortcut=0.0, random_state=4)
    marker = pool_tags.marker_masks.copy()
    marker[40:] = False  # markers on the first half of the pool only
    X_pool = np.where(marker[:, None], 0.95, pool.X).astype(np.float32)
    return net, X_pool, pool.roi_masks, marker


def test_misalignment_sampling_finds_attention_on_marker(shortcut_setup):
    from scipy.ndimage import binary_dilation

    net, X, M, marker = shortcut_setup
    maps = gradcam(net, X)
    near_marker = np.stack([binary_dilation(m, iterations=4) for m in marker])
    mass = maps.reshape(len(X), -1).sum(1)
    on_marker = (maps * near_marker).reshape(len(X), -1).sum(1) / np.maximum(mass, 1e-12)
    idx = misalignment_sampling(net, X, 20, roi_masks=M, random_state=0)
    assert np.mean(idx < 40) >= 0.7  # the queried samples are those with a marker ...
    # ... and their attention sits on it (the region around it is 5 % of the image)
    assert on_marker[idx[idx < 40]].mean() > 0.15
    sd = soft_dice(maps, M)
    assert sd[idx].max() <= np.delete(sd, idx).min() + 1e-6  # the 20 lowest Dice (with ties)
    # uncertainty alone does not see it
    assert np.mean(entropy_sampling(net, X, n_instances=10) < 40) <= 0.3


def test_missing_roi_policies(fitted_net, pool):
    X, M = pool
    masks = [m if i % 3 else None for i, m in enumerate(M)]
    s = score_pool(fitted_net, X, masks, alpha=0.4)
    missing = np.arange(len(X)) % 3 == 0
    assert not s.roi_available[missing].any() and s.roi_available[~missing].all()
    assert np.isnan(s.alignment[missing]).all()
    # "typical" (the default): the median misalignment of the samples with an ROI stands in
    typical = np.median(s.misalignment[~missing])
    np.testing.assert_allclose(s.combined[missing], 0.4 * s.uncertainty[missing] + 0.6 * typical)
    np.testing.assert_allclose(s.combined[~missing], 0.4 * s.uncertainty[~missing]
                               + 0.6 * s.misalignment[~missing])
    old = score_pool(fitted_net, X, masks, alpha=0.4, missing_roi="uncertainty")
    np.testing.assert_allclose(old.combined[missing], s.uncertainty[missing])
    empty = M.copy()
    empty[missing] = False  # an empty mask counts as no ROI
    np.testing.assert_allclose(score_pool(fitted_net, X, empty, alpha=0.4).combined, s.combined)
    excl = score_pool(fitted_net, X, masks, alpha=0.4, missing_roi="exclude")
    assert excl.combined[missing].max() < excl.combined[~missing].min()
    # "matched": ranked by uncertainty among themselves, on the quantiles of the others' scores
    matched = score_pool(fitted_net, X, masks, alpha=0.4, missing_roi="matched")
    np.testing.assert_allclose(matched.combined[~missing], s.combined[~missing])
    u, c = s.uncertainty[missing], matched.combined[missing]
    order = np.argsort(u, kind="stable")
    assert np.all(np.diff(c[order]) >= -1e-12)  # same order as their uncertainty
    k = int(missing.sum())
    np.testing.assert_allclose(np.sort(c), np.quantile(s.combined[~missing],
                                                        (np.arange(k) + 0.5) / k))
    fixed = score_pool(fitted_net, X, masks, alpha=0.4, missing_roi=1.0)
    np.testing.assert_allclose(fixed.combined[missing], 0.4 * s.uncertainty[missing] + 0.6)
    no_masks = dual_criterion_sampling(fitted_net, X, 8, alpha=0.2)
    assert set(no_masks) == set(entropy_sampling(fitted_net, X, n_instances=8))


def test_alignment_choices(fitted_net, pool):
    X, M = pool
    for name in ("dice", "iou", "pointing_game"):
        s = score_pool(fitted_net, X, M, alignment=name)
        assert np.all((s.alignment >= 0) & (s.alignment <= 1))


def test_pipeline_and_learner_inputs(fitted_net, pool):
    X, M = pool
    pipe = make_pipeline(FunctionTransformer(lambda a: a), fitted_net)
    np.testing.assert_allclose(score_pool(pipe, X, M).combined, score_pool(fitted_net, X, M).combined,
                               atol=1e-6)


def test_random_sampling_reproducible():
    X = np.zeros((50, 1, 4, 4))
    a = random_sampling(None, X, 10, random_state=3)
    assert len(set(a)) == 10
    np.testing.assert_array_equal(a, random_sampling(None, X, 10, random_state=3))


def test_ties_broken_by_random_state(fitted_net):
    X = np.repeat(np.random.RandomState(0).rand(1, 1, 32, 32).astype(np.float32), 30, axis=0)
    a = dual_criterion_sampling(fitted_net, X, 5, random_state=0)
    assert len(set(a)) == 5
    np.testing.assert_array_equal(a, dual_criterion_sampling(fitted_net, X, 5, random_state=0))
    assert not np.array_equal(a, dual_criterion_sampling(fitted_net, X, 5, random_state=1))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(roi_masks=np.zeros((3, 32, 32))), ValueError, "3 masks but the pool has 80"),
    (dict(roi_masks=np.zeros((80, 16, 16))), ValueError, r"spatial shape \(16, 16\)"),
    (dict(alpha=1.5), ValueError, "alpha must be a number in"),
    (dict(uncertainty="gini"), ValueError, "Unknown uncertainty"),
    (dict(n_instances=0), ValueError, "n_instances must be >= 1"),
    (dict(n_instances=81), ValueError, "larger than the pool"),
    (dict(missing_roi="zero"), ValueError, "missing_roi must be"),
    (dict(alignment="hausdorff"), ValueError, "Unknown alignment"),
    (dict(layer="nope"), ValueError, "'nope' is not in SmallCNN"),
])
def test_bad_input(fitted_net, pool, kwargs, error, message):
    X, _ = pool
    kwargs.setdefault("n_instances", 2)
    with pytest.raises(error, match=message):
        dual_criterion_sampling(fitted_net, X, **kwargs)


def test_bad_pool_values(fitted_net, pool):
    X, _ = pool
    bad = X.copy()
    bad[42, 0, 3, 3] = np.inf
    with pytest.raises(ValueError, match="index 42"):
        score_pool(fitted_net, bad)
    with pytest.raises(NotFittedError):
        score_pool(CNNClassifier(n_classes=3), X)
    with pytest.raises(TypeError, match="fixes alpha=0"):
        misalignment_sampling(fitted_net, X, 2, alpha=0.5)


@pytest.mark.parametrize("size", [48, 64, 96])
def test_embeddings_of_images_of_another_size_than_training(fitted_net, size):
    """A shape check runs one zero image through the net at a new size; its features are
    not the batch's (issue 39, item 13: 'ran on 33 rows for a batch of 32')."""
    from xal_sklearn import pool_embeddings
    from xal_sklearn.datasets import make_lesion_phantoms

    X = make_lesion_phantoms(40, size, random_state=1).X
    s = score_pool(fitted_net, X, embeddings="gradient", progress=False)
    e = pool_embeddings(fitted_net, X, progress=False)
    assert s.embeddings.shape == (40, e.embeddings.shape[1])
    np.testing.assert_allclose(s.embeddings, e.embeddings, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.proba, fitted_net.predict_proba(X), rtol=1e-4, atol=1e-5)
