"""benchmarks/leaderboard.py, the script that writes docs/results.md's leaderboards,
checked on results whose differences are known by construction."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "leaderboard.py"


@pytest.fixture(scope="module")
def board():
    spec = importlib.util.spec_from_file_location("leaderboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# per arm: accuracy above random's at every budget, the same in every seed (up to a 1e-4 jitter)
SHIFT = {"random": 0.0, "entropy": 0.04, "margin": 0.02, "dual a=0.3": -0.03,
         "random+roi": -0.01}


def fake_results(shift=SHIFT, seeds=10, budgets=(20, 40, 60)):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.7, seeds)  # random's final accuracy per seed
    rows = []
    for a, (arm, d) in enumerate(shift.items()):
        for seed in range(seeds):
            # distinct per arm and seed, mean 0: no tied differences (scipy's Wilcoxon
            # then takes its exact path, not a slow permutation one) and no bias
            jitter = 1e-5 * (seed - (seeds - 1) / 2) * (a + 1)
            for k, n in enumerate(budgets):
                rows.append({"strategy": arm, "seed": seed, "n_labelled": n,
                             "accuracy": base[seed] + d + jitter - 0.1 * (len(budgets) - 1 - k),
                             "balanced_accuracy": base[seed] + d - 0.05,
                             "attention_roi_auc": 0.6 + (0.2 if arm.endswith("+roi") else 0),
                             "chance_roi_auc": 0.5})
    return pd.DataFrame(rows)


def test_set_table_ranks_and_compares_paired_by_seed(board):
    text, order = board.set_table("Toy", fake_results())
    assert order == ["entropy", "margin", "random", "random+roi", "dual a=0.3"]
    rows = {line.split(" | ")[1].strip("`"): line.split(" | ")
            for line in text.splitlines() if line.startswith("| ") and "`" in line}
    # margin: +0.02 (+-0.0001) in every seed, so its interval rounds to a point; 10 seeds
    # all one way give the exact two-sided Wilcoxon p 2/1024, below 0.05 after Holm's x4
    assert rows["margin"][6] == "+0.020 [+0.020, +0.020] p 0.002, better"
    assert rows["dual a=0.3"][6] == "-0.030 [-0.030, -0.030] p 0.002, worse"
    assert rows["dual a=0.3"][8] == "-0.070 [-0.070, -0.070] p 0.002, worse"  # - entropy
    assert rows["entropy"][8] == "—"  # no row against itself
    # the ALC of a curve shifted by d is shifted by d
    assert rows["margin"][7].startswith("+0.020 [+0.020, +0.020]")
    assert rows["random+roi"][5] == "0.800" and "chance 0.500" in text
    assert text.startswith("### Toy: 60 labels, 10-10 seeds")


def test_compact_table_in_points_bold_where_holm_rejects(board):
    results = fake_results()
    _, order = board.set_table("Toy", results)
    lines = board.compact_table(results, order).splitlines()
    assert lines[0] == ("| rank | arm | accuracy | balanced acc. | `roi_auc` | − random "
                        "| − entropy |")
    rows = {line.split(" | ")[1]: line for line in lines[2:]}
    assert rows["margin"].endswith(
        "| **+2.0 [+2.0, +2.0]** | **\u22122.0 [\u22122.0, \u22122.0]** |")
    assert rows["dual"].startswith("| 5 | dual | ")  # " a=0.3" dropped, as results.md does
    assert rows["random"].endswith("|  | **\u22124.0 [\u22124.0, \u22124.0]** |")
    # comparisons computed once and passed in (as main() does) give the same tables
    refs = board.reference_comparisons(results)
    assert board.compact_table(results, order, refs).splitlines() == lines
    assert board.set_table("Toy", results, 0, refs)[0] == board.set_table("Toy", results)[0]


def test_a_difference_within_the_noise_gets_no_verdict(board):
    results = fake_results({"random": 0.0, "entropy": 0.0})
    flip = np.where(np.arange(10) % 2 == 0, 0.01, -0.01) * (1 + np.arange(10) / 100)
    ent = results["strategy"] == "entropy"
    results.loc[ent, "accuracy"] += np.repeat(flip, 3)  # +1.00, -1.01, +1.02, ... points
    text, _ = board.set_table("Toy", results)
    row = next(line for line in text.splitlines() if line.startswith("| ") and "`entropy`" in line)
    cell = row.split(" | ")[6]
    assert cell.startswith("-0.000 [-0.") and cell.endswith(", —")
    assert float(cell.split(" p ")[1].split(",")[0]) > 0.5


def test_unfinished_runs_are_left_out_and_counted(board):
    results = fake_results()
    # margin's seed 3 has only its first round: its ALC would be that round alone
    cut = (results["strategy"] == "margin") & (results["seed"] == 3) & (results["n_labelled"] > 20)
    kept, unfinished = board.finished_runs(results[~cut])
    assert unfinished == 1
    assert not ((kept["strategy"] == "margin") & (kept["seed"] == 3)).any()
    assert len(kept) == len(results) - 3
    text, _ = board.set_table("Toy", kept, unfinished)
    assert "1 unfinished strategy-seed(s) left out." in text
    assert "10-10 seeds" not in text and "9-10 seeds" in text


def test_rank_table_and_the_command_line(board, tmp_path, monkeypatch):
    one, two = fake_results(), fake_results({**SHIFT, "margin": 0.06})
    sets = {}
    for name, results in (("A", one), ("B", two)):
        text, order = board.set_table(name, results)
        sets[name] = (text, order, results)
    table = board.rank_table(sets)
    lines = table.splitlines()
    assert "| `entropy` | 1 | 2 | 1.5 |" in lines and "| `margin` | 2 | 1 | 1.5 |" in lines
    assert "| `dual a=0.3` | 5 | 5 | 5.0 |" in lines
    # ours against the best arm that is neither ours, random nor an ROI-loss arm
    assert "- A: strongest baseline `entropy` (rank 1); `dual a=0.3` -7.0 [-7.0, -7.0] " \
        "(rank 5)." in lines
    assert "- B: strongest baseline `margin` (rank 1); `dual a=0.3` -9.0" in table

    folders = {}
    for name, results in (("a", one), ("b", two)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        results.to_csv(folders[name] / "results.csv", index=False)
    monkeypatch.chdir(tmp_path)
    board.main(["--set", f"Set A={folders['a']}", "--set", f"Set B={folders['b']}",
                "--markdown", "board.md", "--figures", "figs", "--top", "2",
                "--compact", "short.md"])
    short = (tmp_path / "short.md").read_text()
    assert short.startswith("### Set A\n\n| rank | arm |") and "### Set B" in short
    written = (tmp_path / "board.md").read_text()
    assert "### Set A: 60 labels" in written and "### Rank by mean final accuracy" in written
    pngs = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert pngs == ["curves_set_a.png", "curves_set_b.png"]
    assert all((tmp_path / "figs" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
