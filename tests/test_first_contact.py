"""What a new user meets first: the CLI's arguments and output, the estimators' refusals
and repr, the report's Grad-CAM grid, and modAL interop (each as they were reported)."""

import inspect
import json

import numpy as np
import pytest
import torch

from xal_sklearn import ActiveLearner, CNNClassifier, __version__, random_sampling
from xal_sklearn._validation import device_problem
from xal_sklearn.cli import main
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.experiments import plot_gradcam_grid, verdict_table

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _run(tmp_path, *extra, out="res"):
    return ["run", "--n-samples", "120", "--image-size", "32", "--initial", "30",
            "--query-size", "20", "--budget", "50", "--seeds", "1", "--epochs", "2",
            "--out", str(tmp_path / out), *extra]


# --- 1. devices -------------------------------------------------------------------------

@needs_no_cuda
def test_cuda_without_cuda_is_refused_in_one_line_before_any_change():
    net = CNNClassifier(n_classes=2, device="cuda")
    X = np.zeros((4, 1, 16, 16), np.float32)
    with pytest.raises(ValueError) as info:
        net.fit(X, [0, 1, 0, 1])
    message = str(info.value)
    assert "\n" not in message and "device='cuda' cannot be used" in message
    assert "no CUDA support" in message or "no CUDA device" in message
    assert "device='cpu'" in message and "'auto'" in message
    assert not net.initialized_ and not hasattr(net, "module_")
    CNNClassifier(n_classes=2, device="auto", max_epochs=1).fit(X, [0, 1, 0, 1])


def test_device_problem_names_what_was_found(monkeypatch):
    assert device_problem("cpu") is None and device_problem("auto") is None
    assert "not a device" in device_problem("gpu0")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    monkeypatch.setattr(torch.version, "hip", None)
    assert "has no CUDA support" in device_problem("cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "sees no CUDA device" in device_problem("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_problem("cuda:0") is None
    assert "only 1 CUDA device" in device_problem("cuda:1")


@needs_no_cuda
def test_cli_refuses_cuda_before_loading_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(_run(tmp_path, "--device", "cuda"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    # a machine problem: the message alone, with the subcommand's name, not the usage
    assert "usage:" not in err and err.startswith("xal run: error: --device cuda:")
    assert "use --device cpu, or --device auto" in err
    assert not (tmp_path / "res").exists()
    with pytest.raises(SystemExit):
        main(["campaign", "init", str(tmp_path / "study"), "--images", str(tmp_path),
              "--classes", "a,b", "--device", "cuda"])
    err = capsys.readouterr().err
    assert "usage:" not in err and err.startswith("xal campaign init: error: --device cuda")
    assert not (tmp_path / "study").exists()
    from xal_sklearn.campaign import Campaign

    with pytest.raises(ValueError, match="device='cuda' cannot be used"):
        Campaign.create(tmp_path / "study", tmp_path, ["a", "b"], device="cuda")
    assert not (tmp_path / "study").exists()


# --- 2, 3, 6. a one-strategy run ends in a report, logs rounds, says its run time ----------

def test_one_strategy_run_ends_in_a_report_with_lines_per_round(tmp_path, capsys):
    assert main(_run(tmp_path, "--strategies", "random")) == 0
    out = capsys.readouterr().out  # captured: not a terminal, so one line per round
    assert "Only one strategy ran (random), so there is nothing to compare it with" in out
    rounds = [line for line in out.splitlines() if line.startswith("[xal ")]
    assert len(rounds) == 2, out
    assert "random, seed 0: round 0/1, 30 labels, accuracy" in rounds[0]
    assert "round 1/1, 50 labels, accuracy" in rounds[1] and rounds[1].endswith(" s")
    assert "Finished in " in out.splitlines()[-1]
    assert (tmp_path / "res" / "report.md").is_file()
    assert (tmp_path / "res" / "gradcam_grid.png").is_file()
    # --no-progress also silences the per-round lines
    assert main(_run(tmp_path, "--strategies", "random", "--no-progress", out="quiet")) == 0
    assert "[xal " not in capsys.readouterr().out


def test_verdict_table_of_a_single_strategy_is_empty():
    import pandas as pd

    results = pd.DataFrame({"strategy": ["random"] * 2, "seed": [0, 0], "round": [0, 1],
                            "n_labelled": [10, 20], "accuracy": [0.5, 0.6]})
    table = verdict_table(results, "accuracy", "random")
    assert table.empty and "verdict_final" in table.columns


# --- 4. argument parsing -----------------------------------------------------------------

def test_no_prefix_matching_and_subcommand_usage(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(_run(tmp_path, "--seed", "3"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "unrecognized arguments: --seed 3" in err
    assert "usage: xal run" in err
    # a wrong value is said in one line: the usage would bury it
    for argv, words in ((("--alpha", "2"), "--alpha values must lie in [0, 1]"),
                        (("--image-size", "0"), "--image-size must be >= 8"),
                        (("--budget", "10"), "--budget (10) is smaller than --initial (30)")):
        with pytest.raises(SystemExit) as info:
            main(_run(tmp_path, *argv))
        err = capsys.readouterr().err
        assert info.value.code == 2 and err == f"xal run: error: {words}\n"
    # a misspelt choice is syntax: argparse's usage helps there
    with pytest.raises(SystemExit):
        main(_run(tmp_path, "--precision", "fp16"))
    err = capsys.readouterr().err
    assert "usage: xal run" in err and "invalid choice: 'fp16'" in err
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"xal {__version__}"


def test_help_has_text_for_every_option_and_no_default_noise(capsys):
    for argv in (["run", "--help"], ["campaign", "init", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "(default: False)" not in text
        assert "default: convert" not in text
        for option in ("--epochs", "--seed" if "init" in argv else "--batch-size"):
            line = text[text.index("\n  " + option) + 3:].split("\n  -")[0]
            assert len(line.split()) > 2, f"{option} has no help: {line!r}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Adam's learning rate" in text and "(default: 30)" in text


def test_another_configuration_is_refused_in_cli_words(tmp_path, capsys):
    assert main(_run(tmp_path, "--strategies", "random", "--no-progress")) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(_run(tmp_path, "--strategies", "random", "--no-progress", "--lr", "0.01"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "holds results of another configuration" in err
    assert "--force" in err and "force=True" not in err and "usage:" not in err


# --- 5. repr ----------------------------------------------------------------------------

def test_learner_repr_summarises_arrays():
    rng = np.random.RandomState(0)
    X = rng.rand(30, 1, 32, 32).astype(np.float32)
    learner = ActiveLearner(CNNClassifier(n_classes=3), X_training=X, y_training=np.arange(30) % 3,
                            roi_training=X[:, 0] > 0.5, random_state=0)
    text = repr(learner)
    assert "<ndarray of shape (30, 1, 32, 32), float32>" in text
    assert "<ndarray of shape (30, 32, 32), bool>" in text and "random_state=0" in text
    assert "0." not in text.replace("random_state=0", "") and len(text) < 1000
    assert "_device_param" not in text
    html = learner._repr_html_()
    assert "array(" not in html and "shape (30, 1, 32, 32)" in html


# --- 7. the Grad-CAM grid labels what it shows ---------------------------------------------

def _titles(fig):
    return [ax.get_title() for ax in fig.axes[::3]]


def test_gradcam_grid_rows_come_from_the_explicit_test_set(tmp_path):
    from xal_sklearn.cli import _load_data

    assert main(_run(tmp_path, "--strategies", "random,entropy", "--no-progress")) == 0
    out = tmp_path / "res"
    train, test, _ = _load_data("phantoms", 32, 120, 0)
    fig = plot_gradcam_grid(out, train, ("random", "entropy"), n_samples=2, dpi=30,
                            test_set=test)
    titles = _titles(fig)
    test_rows = [k for k, t in enumerate(titles) if t.startswith("test: #")]
    assert len(test_rows) == 2 and not any("pool" in t for t in titles)
    for k in test_rows:  # the picture is the test image the title names, marker-free
        index = int(titles[k].split("#")[1].split(",")[0])
        shown = fig.axes[3 * k].images[0].get_array()
        np.testing.assert_allclose(shown, test.X[index].mean(0), atol=1e-6)
    fig = plot_gradcam_grid(out, train, ("random",), n_samples=2, dpi=30)
    titles = [ax.get_title() for ax in fig.axes[::2]]
    assert sum(t.startswith("pool, unlabelled: #") for t in titles) == 2
    assert not any(t.startswith("test") for t in titles)
    labelled = set(json.loads((out / "checkpoints" / "random__seed0" /
                               "progress.json").read_text())["labelled"])
    assert not {int(t.split("#")[1].split(",")[0]) for t in titles if "pool" in t} & labelled
    assert "on test images" in (out / "report.md").read_text()


# --- 12. modAL ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loop_data():
    d = make_lesion_phantoms(60, 32, shortcut=1.0, random_state=0)
    return d.X[:12], d.y[:12], d.X[12:48], d.y[12:48], d.X[48:], d.y[48:]


def _modal_loop(learner_class, data):
    """The loop of modAL's documentation, as a user writes it."""
    X0, y0, X_pool, y_pool, X_test, y_test = data
    learner = learner_class(estimator=CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                            query_strategy=random_sampling, X_training=X0, y_training=y0)
    for _ in range(2):
        query_idx, query_inst = learner.query(X_pool, n_instances=3)
        learner.teach(X_pool[query_idx], y_pool[query_idx])
        X_pool, y_pool = np.delete(X_pool, query_idx, axis=0), np.delete(y_pool, query_idx)
    return learner, learner.score(X_test, y_test)


def test_modal_learner_queries_with_our_strategies_but_its_teach_fails(loop_data):
    from modAL.models import ActiveLearner as ModALLearner

    X0, y0, X_pool, y_pool, _, _ = loop_data
    modal = ModALLearner(estimator=CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                         query_strategy=random_sampling, X_training=X0, y_training=y0)
    idx, _ = modal.query(X_pool, n_instances=3)  # fitting at construction and querying work
    assert len(set(idx.tolist())) == 3
    assert modal.predict(X_pool[:4]).shape == (4,) and 0 <= modal.score(X_pool, y_pool) <= 1
    # what the README says, held here: modAL 0.4.1's teach calls check_X_y with
    # force_all_finite, which scikit-learn 1.8 removed
    with pytest.raises(TypeError, match="force_all_finite"):
        modal.teach(X_pool[idx], y_pool[idx])
    with pytest.raises(TypeError, match="force_all_finite"):
        _modal_loop(ModALLearner, loop_data)


def test_our_learner_runs_the_modal_loop_unchanged(loop_data):
    learner, score = _modal_loop(ActiveLearner, loop_data)
    assert len(learner.y_training_) == 12 + 6 and 0 <= score <= 1
    assert learner.predict(loop_data[4]).shape == (12,)
    assert learner.predict_proba(loop_data[4]).shape == (12, 3)


@pytest.mark.parametrize("method", ["query", "teach", "fit", "predict", "predict_proba",
                                    "score"])
def test_same_methods_and_keywords_as_modal(method):
    from modAL.models import ActiveLearner as ModALLearner

    theirs = inspect.signature(getattr(ModALLearner, method)).parameters
    ours = inspect.signature(getattr(ActiveLearner, method)).parameters
    named = [n for n, p in theirs.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert list(ours)[:2] == named[:2]  # self and X / X_pool in the same places
    assert set(named) <= set(ours), f"{method} lacks {set(named) - set(ours)}"
    kinds = {p.kind for p in theirs.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds and method != "score":
        assert any(p.kind == p.VAR_KEYWORD for p in ours.values())


def test_teach_bootstrap_and_fit_kwargs_as_modal(loop_data):
    X0, y0, X_pool, y_pool, _, _ = loop_data
    learner = ActiveLearner(CNNClassifier(n_classes=3, max_epochs=1, random_state=0),
                            random_sampling, X_training=X0, y_training=y0, random_state=0)
    learner.teach(X_pool[:4], y_pool[:4], bootstrap=True, epochs=2)
    assert len(learner.y_training_) == 16  # the labelled set itself is not resampled
    assert len(learner.estimator_.history_) == 2  # fit_kwargs reached the estimator's fit


def test_the_recommended_recipe_runs_what_it_says_and_given_options_win(tmp_path, capsys):
    """--recipe recommended: the warm start with a probe head, margin sampling with the ROI
    loss beside random; an option given with another value than its default wins."""
    from xal_sklearn._names import RECIPES

    big = ("--n-samples", "300")  # pretraining needs a batch of 256 pool images
    assert main(_run(tmp_path, "--recipe", "recommended", "--pretrain-epochs", "1", *big)) == 0
    out = capsys.readouterr().out
    config = json.loads((tmp_path / "res" / "config.json").read_text())
    assert sorted(config["strategies"]) == ["margin+roi", "random"]
    assert config["pretrain"] == {"method": "simclr", "epochs": 1}  # the given epochs won
    assert config["estimator_params"]["head_init"] == repr("probe")  # recorded as repr
    assert "from a simclr warm start (1 epochs per seed)" in out
    assert "each head started from a linear probe" in out
    recipe = RECIPES["recommended"]["run"]
    assert recipe["strategies"] == "random,margin+roi" and recipe["pretrain"] == "simclr"

    assert main(_run(tmp_path, "--recipe", "recommended", "--pretrain-epochs", "1", *big,
                     "--strategies", "random,entropy", out="mine")) == 0
    config = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert sorted(config["strategies"]) == ["entropy", "random"]
    assert config["pretrain"]["method"] == "simclr"
