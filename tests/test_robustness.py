"""What users really feed in: any dtype and layout, wrong shapes, interrupts, bad folders."""

import ast
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skorch.callbacks import Callback
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from torch import nn

import xal_sklearn
from xal_sklearn import (ActiveLearner, CNNClassifier, dual_criterion_sampling, gradcam,
                         random_sampling, score_pool)
from xal_sklearn._validation import FaintMaskWarning, binarize_masks
from xal_sklearn.datasets import DataLoadError, load_image_folder, make_lesion_phantoms
from xal_sklearn.experiments import degenerate_runs, run_experiment
from xal_sklearn.strategies import NoROIWarning


@pytest.fixture(scope="module")
def pool_u8():
    data = make_lesion_phantoms(40, 32, shortcut=1.0, random_state=3)
    return np.round(data.X * 255).astype(np.uint8), data.roi_masks


def _layouts(X8, tmp_path):
    ref = X8.astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.uint8,
                                   shape=X8.shape)
    mm[:] = X8
    mm.flush()
    ro = np.load(tmp_path / "pool.npy", mmap_mode="r")
    return ref, {
        "float64": ref.astype(np.float64), "float16": ref.astype(np.float16), "uint8": X8,
        "int16": X8.astype(np.int16), "int64": X8.astype(np.int64),
        "fortran": np.asfortranarray(ref), "transposed view": ref.transpose(0, 1, 3, 2).copy()
        .transpose(0, 1, 3, 2), "reversed view": ref[::-1].copy()[::-1],
        "read-only uint8 memmap": ro,
    }


def test_every_pool_dtype_and_layout_scores_like_float32(fitted_net, pool_u8, tmp_path):
    X8, masks = pool_u8
    ref, layouts = _layouts(X8, tmp_path)
    ref = ref / 255.0
    base = score_pool(fitted_net, ref, masks, progress=False)
    for name, X in layouts.items():
        X = X / 255.0 if name not in ("read-only uint8 memmap", "uint8") else X
        if name in ("read-only uint8 memmap", "uint8"):
            # integer scans: scored as their float32 values, no rescaling
            base_i = score_pool(fitted_net, X8.astype(np.float32), masks, progress=False)
            got = score_pool(fitted_net, X, masks, progress=False)
            np.testing.assert_allclose(got.combined, base_i.combined, atol=1e-5, err_msg=name)
            continue
        got = score_pool(fitted_net, X, masks, progress=False)
        tol = 1e-2 if name == "float16" else 1e-5  # float16 itself rounds the images
        np.testing.assert_allclose(got.combined, base.combined, atol=tol, err_msg=name)
        np.testing.assert_allclose(got.proba, base.proba, atol=tol, err_msg=name)


def test_strided_views_through_every_entry_point(fitted_net, pool_u8):
    X8, masks = pool_u8
    Xf = X8.astype(np.float64) / 255
    view, mview = Xf[::2], masks[::2]
    ref, mref = np.ascontiguousarray(view, dtype=np.float32), np.ascontiguousarray(mview)
    np.testing.assert_allclose(gradcam(fitted_net, view), gradcam(fitted_net, ref), atol=1e-5)
    np.testing.assert_allclose(fitted_net.predict_proba(view), fitted_net.predict_proba(ref),
                               atol=1e-5)
    np.testing.assert_allclose(fitted_net.predict_proba(X8[::-1]),
                               fitted_net.predict_proba(X8[::-1].astype(np.float32)), atol=1e-5)
    a = dual_criterion_sampling(fitted_net, view, 5, roi_masks=mview, random_state=0)
    b = dual_criterion_sampling(fitted_net, ref, 5, roi_masks=mref, random_state=0)
    assert list(a) == list(b)
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                            X_training=X8[:10], y_training=np.arange(10) % 3)
    idx, _ = learner.query(view, n_instances=3, roi_masks=mview)
    assert len(set(idx)) == 3
    learner.teach(X8[10:13].astype(np.int16), np.arange(3))


def test_pipeline_step_that_outputs_float64(fitted_net, pool_u8):
    X8, masks = pool_u8
    scale = FunctionTransformer(lambda a: np.asarray(a, dtype=np.float64) / 255.0)
    pipe = Pipeline([("scale", scale), ("net", fitted_net)]).fit(X8[:4], np.arange(4) % 3)
    pipe.steps[-1] = ("net", fitted_net)  # keep the fitted net
    got = score_pool(pipe, X8, masks, progress=False)
    ref = score_pool(fitted_net, X8.astype(np.float32) / 255, masks, progress=False)
    np.testing.assert_allclose(got.combined, ref.combined, atol=1e-5)


class FlatNet(nn.Module):
    """No global pooling: only the training image size fits the linear layer."""

    def __init__(self, in_channels=1, n_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, 3, padding=1)
        self.fc = nn.LazyLinear(n_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_shape_mismatch_names_both_shapes(fitted_net, phantoms):
    X = phantoms.X[:6]
    with pytest.raises(ValueError, match=r"\(3, 32, 32\) but the network was trained on "
                                         r"\(1, 32, 32\).*3 channel"):
        score_pool(fitted_net, np.repeat(X, 3, axis=1), progress=False)
    with pytest.raises(ValueError, match="3-D volumes"):
        gradcam(fitted_net, X[:, :, None].repeat(4, axis=2))
    with pytest.raises(ValueError, match="channel"):
        fitted_net.predict_proba(np.repeat(X, 3, axis=1))
    # global pooling takes another spatial size ...
    assert score_pool(fitted_net, X[:, :, :16, :16], progress=False).combined.shape == (6,)
    # ... a flattening head does not
    flat = CNNClassifier(FlatNet, n_classes=3, max_epochs=1, random_state=0)
    flat.fit(X, np.arange(6) % 3)
    with pytest.raises(ValueError, match=r"\(1, 16, 16\) but the network was trained on "
                                         r"\(1, 32, 32\).*spatial size"):
        score_pool(flat, X[:, :, :16, :16], progress=False)


class _InterruptAt(Callback):
    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 2:
            raise KeyboardInterrupt


def test_ctrl_c_during_fit_is_not_swallowed(phantoms):
    net = CNNClassifier(n_classes=3, max_epochs=5, callbacks=[_InterruptAt()])
    with pytest.raises(KeyboardInterrupt):
        net.fit(phantoms.X[:32], phantoms.y[:32])
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=1),
                            X_training=phantoms.X[:20], y_training=phantoms.y[:20]).fit(
        phantoms.X[:20], phantoms.y[:20])
    before = learner.estimator_
    learner.estimator = CNNClassifier(n_classes=3, max_epochs=5, callbacks=[_InterruptAt()])
    with pytest.raises(KeyboardInterrupt):
        learner.teach(phantoms.X[20:30], phantoms.y[20:30])
    assert learner.estimator_ is before and len(learner.y_training_) == 20


def _cli(out, *extra, budget="36"):
    return [sys.executable, "-m", "xal_sklearn.cli", "run", "--n-samples", "120",
            "--image-size", "32", "--initial", "12", "--query-size", "8", "--budget", budget,
            "--seeds", "1", "--epochs", "3", "--strategies", "random,dual", "--out", str(out),
            "--no-progress", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_training_then_resume_equals_uninterrupted(tmp_path, sig):
    out = tmp_path / "res"
    progress = out / "checkpoints" / "random__seed0" / "progress.json"
    cmd = _cli(out, budget="52")  # 5 rounds: the signal lands with rounds still to run
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if len(json.loads(progress.read_text())["rows"]) >= 2:
                break  # now inside a later round's training, query or evaluation
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "run the same command again to resume" in err, err
    # the two runs went to two worker processes (the default --n-jobs -1 on two cores or
    # more), and none of them left a semaphore for Python to warn about at exit
    assert "leaked semaphore" not in err, err
    assert not (out / "results.csv").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fresh = tmp_path / "fresh"
    subprocess.run(_cli(fresh, budget="52"), check=True, capture_output=True, timeout=300)
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"),
                                  pd.read_csv(fresh / "results.csv"))


def test_refused_start_leaves_nothing_behind(tmp_path):
    data = make_lesion_phantoms(60, 32, random_state=0)
    out = tmp_path / "res"
    bad = CNNClassifier(n_classes=3, max_epochs=1, lr=-1.0)
    with pytest.raises(ValueError, match="learning rate"):
        run_experiment(bad, data, {"random": random_sampling}, initial_size=10, query_size=5,
                       budget=15, seeds=[0], out_dir=out)
    assert not out.exists()
    good = CNNClassifier(n_classes=3, max_epochs=1)
    run_experiment(good, data, {"random": random_sampling}, initial_size=10, query_size=5,
                   budget=15, seeds=[0], out_dir=out)
    assert (out / "results.csv").is_file()
    for args, message in [(["--lr", "-1"], "--lr must be a positive"),
                          (["--batch-size", "0"], "--batch-size must be >= 1"),
                          (["--n-jobs", "0"], "--n-jobs must be")]:
        res = subprocess.run(_cli(tmp_path / "cli", *args), capture_output=True, text=True)
        assert res.returncode == 2 and message in res.stderr
        assert not (tmp_path / "cli").exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    res = subprocess.run(_cli(a_file), capture_output=True, text=True)
    assert res.returncode == 2 and "is a file, not a folder" in res.stderr


def test_one_class_dataset_is_refused(tmp_path):
    data = make_lesion_phantoms(40, 32, random_state=0)
    data.y[:] = 0
    data.target_names = data.target_names[:1]
    with pytest.raises(ValueError, match="at least 2"):
        run_experiment(CNNClassifier(max_epochs=1), data, {"random": random_sampling},
                       initial_size=5, query_size=5, budget=10, seeds=[0], out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_degenerate_runs_are_flagged():
    table = pd.DataFrame({"strategy": ["a", "a", "b"], "seed": [0, 0, 0],
                          "n_labelled": [10, 20, 10], "n_predicted_classes": [1, 3, 3],
                          "blank_map_fraction": [0.0, 0.0, 1.0]})
    notes = degenerate_runs(table)
    assert "At 10 labels 1 of the 2 models (`a` seed 0) still predicts one class for every " \
        "test image" in notes[0] and "not learning" in notes[0]
    assert notes[1].startswith("Blank (all-zero) Grad-CAM maps for 10% or more of the test")
    assert notes[1].endswith("maps: 10 labels: 1 of 2, up to 100%.")
    assert len(notes) == 2
    # blank maps are said at every budget where a tenth or more of the maps are blank,
    # the final one included, with the models named there
    late = table.assign(n_labelled=[10, 20, 20], blank_map_fraction=[0.0, 0.28, 0.05])
    note, = [n for n in degenerate_runs(late) if n.startswith("Blank")]
    assert note.endswith("maps: at the final budget, 20 labels: 1 of the 2 models (`a` seed 0)"
                         ", up to 28%.")
    both = table.assign(n_predicted_classes=[1, 3, 1])
    assert "2 of the 2 models (all of them)" in degenerate_runs(both)[0]
    some = pd.concat([table, table.assign(seed=1)]).assign(n_predicted_classes=[1, 3, 3, 3, 3, 1],
                                                           blank_map_fraction=0.0)
    assert "2 of the 4 models (some of every strategy)" in degenerate_runs(some)[0]
    assert degenerate_runs(table.assign(n_predicted_classes=3, blank_map_fraction=0)) == []


def test_dual_warns_once_when_no_pool_sample_has_an_roi(fitted_net, phantoms):
    with pytest.warns(NoROIWarning, match="reduces to entropy"):
        dual_criterion_sampling(fitted_net, phantoms.X[:20], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dual_criterion_sampling(fitted_net, phantoms.X[:20], 3, alpha=1.0)


def test_masks_with_nan_refused_and_faint_masks_warned():
    soft = np.zeros((3, 4, 4))
    soft[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        binarize_masks(soft)
    soft[0, 0, 0] = 0.3
    soft[1, 1, 1] = 0.2
    soft[2, 2, 2] = 0.9
    with pytest.warns(FaintMaskWarning, match="2 mask"):
        out = binarize_masks(soft)
    assert out.reshape(3, -1).any(1).tolist() == [False, False, True]


def _folder(tmp_path, rows, header="image,label,mask", encoding="utf-8"):
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    for name in ("a.png", "b.png", "m.png"):
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(root / name)
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n", encoding=encoding)
    return root


def test_loader_input_rules(tmp_path):
    root = _folder(tmp_path, ["a.png,x,m.png", "../outside.png,y,"])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "outside.png")
    with pytest.raises(DataLoadError, match="line 3.*outside the data folder"):
        load_image_folder(root, cache=False)
    assert len(load_image_folder(root, cache=False, allow_outside_root=True).y) == 2
    root = _folder(tmp_path, ["a.png,x,", "b.png, ,"])
    with pytest.raises(DataLoadError, match="line 3: blank label"):
        load_image_folder(root, cache=False)
    root = _folder(tmp_path, ["a.png,x,", "b.png,y,m.png"], encoding="utf-8-sig")
    assert (root / "labels.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    data = load_image_folder(root, cache=False)
    assert list(data.target_names) == ["x", "y"]
    boxes = root / "boxes.csv"
    boxes.write_text("image_id,class_name,x_min,y_min,x_max,y_max\na,lesion,1,1,4,4\n")
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # a relative boxes= path is read from the data folder
        data = load_image_folder(root, boxes="boxes.csv", cache=False)
    finally:
        os.chdir(cwd)
    assert data.roi_masks[0].sum() == 9


def test_validation_layer_imports_no_learner():
    tree = ast.parse(Path(xal_sklearn._validation.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and ("learner" in m or "strategies" in m or "scoring" in m)
                   for m in imported)


def test_single_image_reversed_view(fitted_net):
    # numpy calls a length-1 axis with a negative stride contiguous; torch does not
    X = np.zeros((1, 1, 32, 32), np.float32)[::-1]
    assert X.strides[0] < 0 and X.flags.c_contiguous
    assert score_pool(fitted_net, X, progress=False).combined.shape == (1,)
    assert fitted_net.predict_proba(X).shape == (1, 3)
