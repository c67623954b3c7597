import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from modAL.uncertainty import entropy_sampling
from PIL import Image

from xal_sklearn import CNNClassifier, dual_criterion_sampling, random_sampling
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.experiments import (load_results, plot_gradcam_grid, plot_learning_curves,
                                     run_experiment, summary_table, write_report)

STRATEGIES = {"random": random_sampling, "entropy": entropy_sampling,
              "dual a=0.3": (dual_criterion_sampling, {"alpha": 0.3})}


@pytest.fixture(scope="module")
def data():
    d = make_lesion_phantoms(120, image_size=32, shortcut=0.9, random_state=0)
    d.groups = np.arange(120) // 2  # two images per "patient"
    d.roi_available[::7] = False  # some images nobody annotated
    return d


def net():
    return CNNClassifier(n_classes=3, max_epochs=2, batch_size=16)


def run(data, out_dir, strategies=STRATEGIES, **kw):
    args = dict(initial_size=12, query_size=8, budget=36, seeds=(0, 1), test_size=0.25,
                out_dir=out_dir, progress=False)
    args.update(kw)
    return run_experiment(net(), data, strategies, **args)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    return run(data, out), out


def test_tidy_rows_and_protocol(finished, data):
    table, out = finished
    assert len(table) == 3 * 2 * 4  # strategies x seeds x (round 0 + 3 rounds)
    for (name, seed), part in table.groupby(["strategy", "seed"]):
        np.testing.assert_array_equal(part["round"], [0, 1, 2, 3])
        np.testing.assert_array_equal(part["n_labelled"], [12, 20, 28, 36])
        queried = [i for q in part["queried"] for i in json.loads(q)]
        assert len(queried) == 24 and len(set(queried)) == 24  # never twice
        from xal_sklearn.datasets import group_train_test_split

        _, test = group_train_test_split(data.groups, 0.25, random_state=seed)
        assert not set(queried) & set(test)  # the pool is the training split only
    for seed in (0, 1):  # same initial model for every strategy: identical round-0 metrics
        first = table[(table["seed"] == seed) & (table["round"] == 0)]
        assert first["accuracy"].nunique() == 1 and first["attention_soft_dice"].nunique() == 1
    for metric in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr", "attention_soft_dice",
                   "attention_roi_auc", "attention_mass_in_roi"):
        assert table[metric].between(0, 1).all()
    assert (out / "results.csv").is_file() and (out / "config.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seeds"] == [0, 1] and "torch" in cfg["versions"]
    pd.testing.assert_frame_equal(load_results(out), pd.read_csv(out / "results.csv"))


def test_resume_after_crash_gives_identical_results(finished, data, tmp_path):
    table, _ = finished
    calls = {"n": 0}

    def flaky_random(classifier, X_pool, n_instances=1, random_state=None, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a run
        return random_sampling(classifier, X_pool, n_instances, random_state=random_state)

    flaky_random.__qualname__ = random_sampling.__qualname__  # same configuration
    flaky_random.__module__ = random_sampling.__module__
    strategies = {"random": flaky_random}
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path, strategies)
    partial = load_results(tmp_path)
    assert 1 <= len(partial) < 8  # finished rounds survived the crash
    again = run(data, tmp_path, {"random": random_sampling})
    expected = table[table["strategy"] == "random"].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, expected, check_exact=False, atol=1e-12)


def test_kill_9_then_resume_via_cli(tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "xal_sklearn.cli", "run", "--n-samples", "120",
           "--image-size", "32", "--initial", "12", "--query-size", "8", "--budget", "44",
           "--seeds", "1", "--epochs", "2", "--strategies", "random,dual", "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out / "checkpoints" / "random__seed0" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if len(json.loads(progress.read_text())["rows"]) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.csv").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = pd.read_csv(out / "results.csv")
    fresh = tmp_path / "fresh"
    subprocess.run(cmd[:-3] + ["--out", str(fresh), "--no-progress"], check=True,
                   capture_output=True, timeout=300)
    pd.testing.assert_frame_equal(resumed, pd.read_csv(fresh / "results.csv"))
    assert "accuracy (mean" in done.stdout and (out / "report.md").is_file()


def test_refuses_other_configuration_unless_forced(finished, data):
    table, out = finished
    before = (out / "results.csv").read_bytes()
    with pytest.raises(ValueError, match="different configuration.*force"):
        run(data, out, budget=44)
    assert (out / "results.csv").read_bytes() == before  # nothing overwritten


@pytest.mark.parametrize("kwargs, message", [
    (dict(budget=10), "budget \\(10\\) is smaller than the initial"),
    (dict(query_size=0), "query_size must be a positive integer"),
    (dict(seeds=(1, 1)), "distinct"),
    (dict(strategies={}), "non-empty dict"),
    (dict(strategies={"x": 3}), "not callable"),
])
def test_bad_arguments(data, tmp_path, kwargs, message):
    strategies = kwargs.pop("strategies", STRATEGIES)
    with pytest.raises((ValueError, TypeError), match=message):
        run(data, tmp_path, strategies, **kwargs)
    assert not (tmp_path / "config.json").exists()


def test_class_absent_from_training_split(data, tmp_path):
    from sklearn.utils import Bunch

    d = Bunch(**data)
    d.groups = np.where(data.y == 2, -1, data.groups)  # all of class 2 in one group
    from xal_sklearn.datasets import group_train_test_split

    seed = next(s for s in range(100)  # a seed that puts that group in the test split
                if -1 in d.groups[group_train_test_split(d.groups, 0.25, random_state=s)[1]])
    with pytest.raises(ValueError, match=r"Class\(es\) \['lobulated'\] are absent"):
        run(d, None, seeds=(0, seed))


def test_dask_local_cluster(data, tmp_path):
    distributed = pytest.importorskip("distributed")
    import joblib

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster), joblib.parallel_config(backend="dask"):
        table = run(data, tmp_path, {"random": random_sampling}, n_jobs=2)
    assert len(table) == 8 and set(table["seed"]) == {0, 1}
    assert len(list((tmp_path / "checkpoints").glob("*__seed*/progress.json"))) == 2


def test_plots_and_report(finished, data):
    table, out = finished
    path = out / "curves.png"
    plot_learning_curves(table, path=path, dpi=50)
    assert Image.open(path).size == (550, 200)
    grid = out / "grid.png"
    plot_gradcam_grid(out, data, ("random", "dual a=0.3"), n_samples=2, path=grid, dpi=40)
    with Image.open(grid) as img:
        assert img.size == (300, 600) and img.format == "PNG"
    report = write_report(out, data)
    text = report.read_text()
    assert "| labels | random | entropy | dual a=0.3 |" in text and "±" in text
    assert (out / "learning_curves.png").is_file() and (out / "gradcam_grid.png").is_file()
    table_acc = summary_table(table, "accuracy")
    assert list(table_acc.index) == [12, 20, 28, 36]


def test_cli_errors_and_report(finished, tmp_path):
    _, out = finished
    bad = subprocess.run([sys.executable, "-m", "xal_sklearn.cli", "run", "--strategies",
                          "random,oracle", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown strategy oracle" in bad.stderr
    assert not (tmp_path / "x").exists()
    bad = subprocess.run([sys.executable, "-m", "xal_sklearn.cli", "run", "--budget", "5"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "smaller than --initial" in bad.stderr
    rep = subprocess.run([sys.executable, "-m", "xal_sklearn.cli", "report", str(out)],
                         capture_output=True, text=True)
    assert rep.returncode == 0 and "report.md" in rep.stdout


# Defined outside any importable module so that loky ships it by value and a fresh worker
# need not import this test module (and torch) first.
_HOLD_MEMORY = """
def hold_memory(i):
    import os, sys, time
    import numpy as np
    # each call keeps 350 MB alive in its worker, past loky's 300 MB restart threshold
    sys.__dict__.setdefault("_xal_test_held", []).append(np.ones(350 * 2**20 // 8))
    time.sleep(1.1)  # loky checks a worker's memory at most once a second
    return i, os.getpid()
"""


def test_loky_worker_restarts_are_not_reported_as_leaks_and_lose_no_job():
    import warnings

    from joblib import Parallel, delayed

    from xal_sklearn.experiments._run import quiet_worker_restarts

    namespace = {"__name__": "xal_test_shipped_by_value"}
    exec(_HOLD_MEMORY, namespace)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_worker_restarts():
            done = Parallel(n_jobs=2)(delayed(namespace["hold_memory"])(i) for i in range(6))
            warnings.warn("a warning of our own", UserWarning)
    if len({pid for _, pid in done}) <= 2:
        pytest.skip("loky restarted no worker here (it needs psutil)")
    assert [i for i, _ in done] == list(range(6))  # every job came back, in order
    assert [str(w.message) for w in seen] == ["a warning of our own"]


def test_several_runs_at_once_print_lines_even_on_a_terminal(data, monkeypatch, capsys):
    """Bars of runs in other processes would fight over one terminal line."""
    import io

    import joblib

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    one = {"random": random_sampling}
    # threads stand in for worker processes, so the terminal reaches the runs
    for strategies, n_jobs, lines in [(STRATEGIES, 2, True), (one, 2, False),
                                      (STRATEGIES, 1, False)]:
        monkeypatch.setattr(sys, "stderr", Terminal())
        with joblib.parallel_config(backend="threading"):
            run(data, None, strategies, seeds=(0,), budget=20, n_jobs=n_jobs, progress=None)
        out, bars = capsys.readouterr().out, sys.stderr.getvalue()
        logged = [line for line in out.splitlines() if line.startswith("[xal ")]
        assert len(logged) == (len(strategies) * 2 if lines else 0), out
        assert ("seed 0:" in bars) != lines, bars  # tqdm's "random seed 0: ...%|" bars


def test_the_configuration_hash_does_not_depend_on_the_process(tmp_path):
    # skorch's _params_to_validate is a set: its repr's order changes with the string
    # hashing of each process, which made a resumed run refuse its own folder
    script = ("from xal_sklearn import CNNClassifier; "
              "from xal_sklearn.experiments._run import _stable_repr; "
              "net = CNNClassifier(module__context_channels=8, module__dropout=0.1); "
              "print(_stable_repr(net.get_params(deep=False)['_params_to_validate']))")
    seen = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONHASHSEED=str(seed)), check=True).stdout
            for seed in range(6)}
    assert seen == {"{'iterator_train__shuffle', 'module__context_channels', "
                    "'module__dropout'}\n"}


def test_a_class_of_one_image_is_named_in_a_warning(data, tmp_path, capsys):
    """A mistyped label makes a class of one image: said before anything runs, with the
    class and its count (issue 39, item 11)."""
    from sklearn.utils import Bunch

    from xal_sklearn.cli import _show_warning
    from xal_sklearn.experiments import RareClassWarning

    typo = Bunch(**{k: (v.copy() if hasattr(v, "copy") else v) for k, v in data.items()})
    typo.target_names = [*data.target_names, "benigm"]
    typo.y = np.asarray(data.y).copy()
    typo.y[5] = 3
    with pytest.warns(RareClassWarning, match=r"Class\(es\) 'benigm' \(1\) have fewer than 4 "
                      r"images, too few for a test split of 25% of the groups and the pool"):
        try:  # at these seeds the image lands in the pool, or the split refuses the run
            run_experiment(CNNClassifier(n_classes=4, max_epochs=1), typo, {"random":
                           random_sampling}, initial_size=12, query_size=8, budget=20,
                           seeds=(0,), test_size=0.25, progress=False)
        except ValueError as exc:
            assert "absent from the training split" in str(exc)
    # the command prints it as a line of its own, not as a source location
    _show_warning(RareClassWarning("Class(es) 'benigm' (1) ..."), RareClassWarning, "f", 1)
    assert capsys.readouterr().err == "xal: warning: Class(es) 'benigm' (1) ...\n"
    with warnings.catch_warnings():  # a well-balanced set says nothing
        warnings.simplefilter("error", RareClassWarning)
        run_experiment(net(), data, {"random": random_sampling}, initial_size=12, query_size=8,
                       budget=20, seeds=(0,), test_size=0.25, progress=False)

