"""Honest simulation: with predicted or no pool ROIs no strategy reads an unlabelled image's ROI."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from xal_sklearn import CNNClassifier, ROIPredictor, dual_criterion_sampling
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.experiments import run_experiment
from xal_sklearn.experiments._run import read_checkpoint

ARM = {"dual+roi": (dual_criterion_sampling, {"alpha": 0.3, "alignment": "roi_auc"},
                    {"roi_loss": "rank"})}


@pytest.fixture(scope="module")
def data():
    return make_lesion_phantoms(90, image_size=32, shortcut=0.0, random_state=3)


def _run(data, pool_rois, out):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "none": dual says it falls back to entropy
        table = run_experiment(
            CNNClassifier(n_classes=3, max_epochs=3, batch_size=16), data, ARM, initial_size=12,
            query_size=8, budget=36, seeds=[0], out_dir=out, n_jobs=1, progress=False,
            pool_rois=pool_rois,
            roi_model=ROIPredictor(max_epochs=5) if pool_rois == "predicted" else None)
    labelled = read_checkpoint(out / "checkpoints" / "dual+roi__seed0")["labelled"]
    return table, np.asarray(labelled)


def _with_noise_outside(data, labelled):
    """The data set with the ROI of every image never labelled replaced by noise."""
    noisy = Bunch(**data)
    rng = np.random.RandomState(0)
    masks = data.roi_masks.copy()
    hidden = np.setdiff1d(np.arange(len(masks)), labelled)
    masks[hidden] = rng.rand(len(hidden), *masks.shape[1:]) < 0.3
    noisy.roi_masks = masks
    return noisy


@pytest.mark.parametrize("pool_rois", ["predicted", "none", "given"])
def test_pool_rois_of_unlabelled_images_are_never_read(data, tmp_path, pool_rois):
    table, labelled = _run(data, pool_rois, tmp_path / "a")
    again, labelled_again = _run(_with_noise_outside(data, labelled), pool_rois, tmp_path / "b")
    same = np.array_equal(labelled, labelled_again)
    if pool_rois == "given":  # the oracle reads them: the control that the test can fail
        assert not same
        return
    assert same
    assert list(table["queried"]) == list(again["queried"])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["pool_rois"] == pool_rois
    final = table.iloc[-1]
    assert final["n_labelled_rois"] == 36
    if pool_rois == "predicted":
        assert 0 < final["roi_model_dice"] <= 1 and final["roi_model_roi_auc"] > 0.5
        sources = json.loads(final["queried_roi_source"])
        assert len(sources) == 8 and set(sources) <= {"predicted", "none"}
    else:
        assert np.isnan(final["roi_model_dice"])


def test_given_keeps_the_configuration_hash_of_older_folders(data, tmp_path):
    """Folders written before pool_rois existed ("given") resume; other settings do not mix."""
    _run(data, "given", tmp_path / "g")
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["pool_rois"] == "given"
    without = {k: v for k, v in config.items() if k not in ("hash", "versions", "pool_rois")}
    import hashlib

    assert hashlib.sha256(json.dumps(without, sort_keys=True).encode()).hexdigest()[:16] \
        == config["hash"]
    with pytest.raises(ValueError, match="different configuration"):
        _run(data, "predicted", tmp_path / "g")


def test_bad_settings_are_refused(data):
    with pytest.raises(ValueError, match="pool_rois must be one of given, predicted, none"):
        run_experiment(CNNClassifier(n_classes=3), data, ARM, pool_rois="oracle")
    with pytest.raises(ValueError, match='only used with pool_rois="predicted"'):
        run_experiment(CNNClassifier(n_classes=3), data, ARM, roi_model=ROIPredictor())


def test_cli_runs_with_predicted_pool_rois_and_says_so(tmp_path, capsys):
    from xal_sklearn.cli import main

    out = tmp_path / "r"
    code = main(["run", "--n-samples", "60", "--strategies", "entropy,dual+roi", "--seeds", "1",
                 "--initial", "12", "--query-size", "12", "--budget", "24", "--epochs", "2",
                 "--pool-rois", "predicted", "--n-jobs", "1", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    said = capsys.readouterr().out
    assert "pool ROIs: drawn by an ROI model trained on the labelled ROIs" in said
    report = (out / "report.md").read_text()
    assert "Pool ROIs: predicted. No strategy saw an expert ROI of an unlabelled image" in report
    results = pd.read_csv(out / "results.csv")
    dual = results[results["strategy"] == "dual a=0.3+roi"]
    assert dual["roi_model_dice"].notna().all()
    # entropy takes no ROIs: nothing recorded
    entropy = results[results["strategy"] == "entropy"]["queried_roi_source"]
    assert json.loads(entropy.iloc[-1]) == [None] * 12
