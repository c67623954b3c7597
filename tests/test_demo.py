"""The demo runs the full method against its baselines and ablations and says in words
what happened (issue 16, part 3)."""

import json

import numpy as np
import pandas as pd
import pytest

from xal_sklearn import CNNClassifier, dual_criterion_sampling, random_sampling
from xal_sklearn.cli import _describe, _strategies, main
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.experiments import comparison_sentences, load_results, run_experiment


def _table(diffs, seeds=5, budget=110):
    """Results where strategy 'full' differs from 'random' by ``diffs[seed]`` at the end."""
    rows = []
    for seed in range(seeds):
        for name, final in (("random", 0.70), ("full", 0.70 + diffs[seed])):
            for n, acc in ((30, 0.5), (budget, final)):
                rows.append({"strategy": name, "seed": seed, "n_labelled": n, "accuracy": acc})
    return pd.DataFrame(rows)


def test_sentence_says_when_the_method_loses():
    results = _table([-0.05, -0.04, -0.06, -0.05, -0.03])
    sentence, = comparison_sentences(results, [("full", "random")],
                                     names={"full": "the full method",
                                            "random": "random selection"})
    assert sentence.startswith("At 110 labels the full method lost to random selection by "
                               "4.6 accuracy points")
    from scipy import stats

    ci = stats.bootstrap((np.array([-0.05, -0.04, -0.06, -0.05, -0.03]),), np.mean,
                         n_resamples=10000, method="percentile",
                         random_state=0).confidence_interval
    assert (f"(95 % interval of the difference {100 * ci.low:+.1f} to {100 * ci.high:+.1f} "
            "over 5 seeds)") in sentence
    assert sentence.endswith("a verdict, as the interval excludes 0.")


def test_sentences_for_a_win_a_draw_and_too_few_seeds():
    win, = comparison_sentences(_table([0.05, 0.04, 0.06, 0.05, 0.03]), [("full", "random")])
    assert "`full` beat `random` by 4.6 accuracy points" in win and "a verdict" in win
    draw, = comparison_sentences(_table([0.05, -0.04, 0.02, -0.03, 0.01]), [("full", "random")])
    assert "not a verdict: the interval includes 0, so this may be chance" in draw
    tie, = comparison_sentences(_table([0.0004, -0.0002, 0.0001, 0.0, -0.0001]),
                                [("full", "random")])
    assert "`full` tied with `random`" in tie and "by 0.0" not in tie
    few, = comparison_sentences(_table([0.05, 0.04], seeds=2), [("full", "random")])
    assert "not a verdict: 2 seed(s) are too few (it takes 5)" in few


def test_cli_builds_the_five_arms():
    roi = {"roi_loss": "dice", "roi_weight": 0.1}
    arms = _strategies(["random", "entropy", "dual", "random+roi", "dual+roi"], [0.3],
                       "entropy", "soft_dice", roi)
    assert list(arms) == ["random", "entropy", "dual a=0.3", "random+roi", "dual a=0.3+roi"]
    assert arms["dual a=0.3"][2] == {} and arms["dual a=0.3+roi"][2] == roi
    assert arms["dual a=0.3+roi"][:2] == arms["dual a=0.3"][:2]
    assert _describe("dual a=0.3+roi").startswith("the full method (dual-criterion")
    assert _describe("dual a=0.3") == "dual-criterion selection (a=0.3) without the ROI loss"
    # a run without +roi arms (every strategy trains alike) has no ablation to name
    assert _describe("dual a=0.3", arms=False) == "dual-criterion selection (a=0.3)"
    assert _describe("random+roi") == "random selection with the ROI loss"


def test_strategy_estimator_params_pair_by_seed(tmp_path):
    data = make_lesion_phantoms(60, 32, shortcut=1.0, random_state=0)
    net = CNNClassifier(n_classes=3, max_epochs=1)
    strategies = {"random": random_sampling,
                  "random+roi": (random_sampling, {}, {"roi_loss": "dice", "roi_weight": 0.5}),
                  "dual+roi": (dual_criterion_sampling, {"alpha": 0.3}, {"roi_loss": "dice"})}
    table = run_experiment(net, data, strategies, initial_size=10, query_size=5, budget=15,
                           seeds=[0], out_dir=tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["strategies"]["random+roi"]["estimator_params"] == {"roi_loss": "dice",
                                                                      "roi_weight": 0.5}
    assert "estimator_params" not in config["strategies"]["random"]
    first = table[table["round"] == 1].set_index("strategy")["queried"]
    assert first["random"] == first["random+roi"]  # same seed, same random queries
    acc = table[table["round"] == 1].set_index("strategy")["attention_roi_auc"]
    assert acc["random"] != acc["random+roi"]  # but another training
    from xal_sklearn.experiments._run import estimator_template

    assert estimator_template(config, "random+roi").roi_weight == 0.5
    assert estimator_template(config, "random").roi_loss is None
    assert estimator_template(config, "random+roi").roi_balance == "ce"
    assert estimator_template(config, "random+roi").roi_conflict == "separate"
    # a results folder written before roi_balance existed rebuilds its fixed weighting
    del config["template"]["roi_balance"], config["template"]["roi_conflict"]
    old = estimator_template(config, "random+roi")
    assert (old.roi_balance, old.roi_conflict) == ("fixed", "sum")
    # the network's context branch is recorded at its default, and a folder written
    # before it existed rebuilds the network without one (and hashes differently)
    assert config["template"]["module__context_channels"] == 0.25
    assert estimator_template(config).get_params()["module__context_channels"] == 0.25
    del config["template"]["module__context_channels"]
    assert estimator_template(config).get_params()["module__context_channels"] == 0
    with pytest.raises(ValueError, match="strategy 'bad'.*Invalid parameter 'roi_los'"):
        run_experiment(net, data, {"bad": (random_sampling, {}, {"roi_los": "dice"})},
                       initial_size=10, query_size=5, budget=15, seeds=[0],
                       out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # resuming restores each arm's own estimator
    again = run_experiment(net, data, strategies, initial_size=10, query_size=5, budget=15,
                           seeds=[0], out_dir=tmp_path / "r")
    pd.testing.assert_frame_equal(again, load_results(tmp_path / "r"))


def test_demo_output_ends_in_sentences(tmp_path, capsys):
    assert main(["run", "--n-samples", "90", "--image-size", "32", "--initial", "30",
                 "--query-size", "10", "--budget", "40", "--seeds", "2", "--epochs", "2",
                 "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "strategies random, entropy, dual a=0.3, random+roi, dual a=0.3+roi" in out
    assert "for the +roi strategies" in out
    words = out[out.index("In words"):].splitlines()[1:]
    assert words[0].startswith("  Bottom line: ")
    # the full method against each other arm (or: neither learnt anything at 2 epochs)
    assert sum("the full method" in w and "40 labels" in w for w in words[1:5]) == 4
    assert "WARNING" not in out
    report = (tmp_path / "d" / "report.md").read_text()
    assert "## In words" in report and "- Bottom line: " in report
    # which arms train how, in one sentence
    assert ("Training: `random`, `entropy` and `dual a=0.3` with cross-entropy only; "
            "`random+roi` and `dual a=0.3+roi` with cross-entropy + the `rank` attention "
            "loss") in report
    assert np.isfinite(load_results(tmp_path / "d")["accuracy"]).all()


def test_cli_context_channels_reach_every_arm_and_the_record(tmp_path, capsys):
    from xal_sklearn.experiments._run import estimator_template

    assert main(["run", "--n-samples", "60", "--image-size", "32", "--initial", "20",
                 "--query-size", "10", "--budget", "30", "--seeds", "1", "--epochs", "1",
                 "--strategies", "random,dual+roi", "--context-channels", "8",
                 "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert "a SmallCNN with a 8-channel context branch" in capsys.readouterr().out
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    for arm in (None, "dual a=0.3+roi"):
        net = estimator_template(config, arm)
        assert net.get_params()["module__context_channels"] == 8


def test_cli_roi_options_default_to_the_classifier_and_reach_the_roi_arms():
    from xal_sklearn.cli import _parser, _roi_settings

    parser = _parser()
    args = parser.parse_args(["run"])
    assert _roi_settings(args) == {}  # CNNClassifier's defaults apply
    args = parser.parse_args(["run", "--roi-weight", "0.5", "--roi-balance", "fixed",
                              "--roi-dilation", "1", "--roi-warmup", "0.25"])
    settings = _roi_settings(args)
    assert settings == {"roi_weight": 0.5, "roi_balance": "fixed", "roi_dilation": 1,
                        "roi_warmup": 0.25}
    assert parser.parse_args(["run", "--roi-warmup", "3"]).roi_warmup == 3
    arms = _strategies(["dual", "dual+roi"], [0.3], "entropy", "soft_dice",
                       {"roi_loss": "rank", **settings})
    assert arms["dual a=0.3"][2] == {}
    assert arms["dual a=0.3+roi"][2] == {"roi_loss": "rank", **settings}


@pytest.mark.parametrize("argv, message", [
    (["--roi-warmup", "1.5"], "--roi-warmup must be an integer number of epochs >= 0 or a "
                              "share of --epochs in [0, 1), got 1.5."),
    (["--roi-warmup", "x"], "invalid whole_or_share value"),
    (["--roi-dilation", "-1"], "--roi-dilation must be an integer >= 0, got -1."),
    (["--roi-balance", "mean"], "invalid choice: 'mean'"),
    (["--roi-weight", "-2"], "--roi-weight must be a finite number >= 0, got -2.0."),
    (["--roi-weight", "nan"], "--roi-weight must be a finite number >= 0, got nan."),
    (["--context-channels", "64"], "--context-channels must be a number of channels from 0 "
                                   "to 63 (the network's last block has 64 and Grad-CAM "
                                   "reads at least one) or a share in [0, 1); got 64"),
    (["--context-channels", "-1"], "--context-channels must be a number of channels"),
    (["--context-channels", "1.0"], "or a share in [0, 1); got 1.0"),
])
def test_cli_refuses_bad_roi_options(argv, message, capsys):
    from xal_sklearn.cli import main

    with pytest.raises(SystemExit):
        main(["run", *argv])
    assert message in capsys.readouterr().err


def test_dual_alpha_default_is_the_one_the_cli_campaigns_and_score_pool_use():
    import inspect

    from xal_sklearn import dual_criterion_sampling, score_pool
    from xal_sklearn.campaign import Campaign
    from xal_sklearn.cli import _parser

    default = inspect.signature(dual_criterion_sampling).parameters["alpha"].default
    assert default == 0.3
    assert inspect.signature(score_pool).parameters["alpha"].default == default
    assert inspect.signature(Campaign.create).parameters["alpha"].default == default
    assert float(_parser().parse_args(["run"]).alpha) == default


def test_xal_run_runs_one_strategy_seed_pair_per_core_by_default(monkeypatch):
    import torch

    from xal_sklearn.cli import _check_run_args, _parser

    def n_jobs(*argv):
        args = _parser().parse_args(["run", *argv])
        _check_run_args(args)
        return args.n_jobs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("xal_sklearn._validation.device_problem", lambda device: None)
    assert n_jobs() == -1  # the CPU: one run per core
    assert n_jobs("--device", "cuda") == 1  # one GPU: one CUDA context at a time
    assert n_jobs("--device", "auto") == 1
    assert n_jobs("--device", "cuda", "--n-jobs", "4") == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert n_jobs("--device", "auto") == -1
    assert n_jobs("--n-jobs", "1") == 1
