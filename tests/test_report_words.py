"""The report's sentences in words: bottom line, nothing learnt, attention, balance, no-ROI
queries and training (issue 39, items 1-5)."""

import json

import numpy as np
import pandas as pd

from xal_sklearn.experiments import (bottom_line, comparison_sentences, degenerate_runs,
                                     plain_sentences)
from xal_sklearn.experiments._report import (attention_sentences, balance_sentence,
                                             without_roi_sentence)

CONFIG = {"estimator_params": {"roi_loss": "None", "max_epochs": "20"},
          "strategies": {"random": {}, "entropy": {},
                         "dual+roi": {"estimator_params": {"roi_loss": "rank"}}}}


def _results(final, seeds=5, classes=None, **extra):
    """Two rounds per arm and seed; ``final[arm]`` is the accuracy at 100 labels per seed."""
    rows = []
    for arm, values in final.items():
        for seed in range(seeds):
            for n, acc in ((50, 0.4), (100, values[seed])):
                row = {"strategy": arm, "seed": seed, "n_labelled": n, "accuracy": acc,
                       "balanced_accuracy": acc, "n_predicted_classes": 3}
                for column, per_arm in extra.items():
                    row[column] = per_arm[arm] if np.isscalar(per_arm[arm]) else \
                        per_arm[arm][n == 100]
                rows.append(row)
    return pd.DataFrame(rows)


def test_bottom_line_names_the_best_arm_and_whether_it_is_a_verdict():
    clear = _results({"random": [0.6, 0.61, 0.62, 0.6, 0.59],
                      "entropy": [0.70, 0.72, 0.71, 0.69, 0.73],
                      "dual+roi": [0.65, 0.66, 0.64, 0.66, 0.65]})
    line = bottom_line(clear, names={"entropy": "entropy selection"})
    assert line.startswith("Bottom line: at 100 labels entropy selection had the highest mean "
                           "test accuracy (0.710 over 5 seeds); a verdict against every other")
    noisy = _results({"random": [0.6, 0.7, 0.5, 0.65, 0.55],
                      "entropy": [0.62, 0.6, 0.58, 0.7, 0.6]})
    assert "not a verdict: against every other arm the 95 % interval" in bottom_line(noisy)
    mixed = clear.copy()
    mixed.loc[(mixed.strategy == "dual+roi") & (mixed.n_labelled == 100), "accuracy"] = \
        [0.72, 0.70, 0.73, 0.68, 0.72]
    assert "a verdict against `random` only" in bottom_line(mixed)
    few = _results({"random": [0.6, 0.6], "entropy": [0.7, 0.7]}, seeds=2)
    assert "not a verdict: 2 seed(s) are too few (it takes 5)" in bottom_line(few)


def test_nothing_learnt_is_said_instead_of_a_tie():
    flat = _results({"random": [0.56] * 5, "entropy": [0.56] * 5})
    flat["n_predicted_classes"] = 1
    line = bottom_line(flat)
    assert line.startswith("Bottom line: nothing was learnt.") and "tie" not in line
    sentence, = comparison_sentences(flat, [("entropy", "random")])
    assert "neither `entropy` nor `random` learnt anything" in sentence
    assert "tied" not in sentence
    # an arm that learnt nothing is not named best, even with the higher mean
    one = _results({"random": [0.56] * 5, "entropy": [0.5, 0.52, 0.5, 0.51, 0.5]})
    one.loc[one.strategy == "random", "n_predicted_classes"] = 1
    assert "`entropy` had the highest mean" in bottom_line(one)


def test_attention_sentence_per_arm_with_the_roi_loss():
    r = _results({"random": [0.6] * 5, "entropy": [0.6] * 5, "dual+roi": [0.6] * 5},
                 attention_roi_auc={"random": 0.733, "entropy": 0.759, "dual+roi": 0.845},
                 chance_roi_auc={"random": 0.486, "entropy": 0.486, "dual+roi": 0.486})
    sentence, = attention_sentences(r, CONFIG)
    assert sentence == ("`dual+roi` attended to the ROI more than any arm trained without the "
                        "ROI loss: test roi_auc of its Grad-CAM 0.845 at 100 labels against "
                        "0.733-0.759 for the arms trained without it (chance 0.486).")
    no_roi = {"estimator_params": {"roi_loss": "None"}, "strategies": {"random": {}}}
    assert attention_sentences(r[r.strategy == "random"], no_roi) == []


def test_balanced_accuracy_far_below_accuracy_gets_a_sentence():
    r = _results({"random": [0.64] * 5, "entropy": [0.7] * 5})
    assert balance_sentence(r) is None
    r.loc[(r.strategy == "random") & (r.n_labelled == 100), "balanced_accuracy"] = 0.461
    assert balance_sentence(r).startswith("Balanced accuracy (the mean of the per-class recalls)"
                                          " lies well below accuracy for `random` (0.461 "
                                          "against 0.640)")


def test_queries_without_an_roi_are_counted_and_a_dominated_batch_is_noted():
    r = _results({"random": [0.6] * 5, "dual+roi": [0.6] * 5},
                 queried_without_roi={"random": (0, 9), "dual+roi": (0, 37)},
                 pool_without_roi={"random": 0.17, "dual+roi": 0.17})
    assert without_roi_sentence(r) == (
        "Images without an ROI (an empty or missing mask, like a normal image's) are 17% of "
        "the pool; after the initial set they made up 18% of the queries of `random` and 74% "
        "of those of `dual+roi`.")
    note, = degenerate_runs(r)
    assert note.startswith("At 100 labels 5 of the 10 models (`dual+roi` seeds 0, 1, 2, 3, 4)"
                           " chose more than half of the round's batch among images without")
    assert "they are 17% of the pool" in note
    assert without_roi_sentence(r.drop(columns="queried_without_roi")) is None


def test_plain_sentences_open_with_the_bottom_line(tmp_path):
    r = _results({"random": [0.6] * 5, "entropy": [0.7] * 5, "dual+roi": [0.65] * 5})
    words = plain_sentences(r, CONFIG, ["a comparison."])
    assert words[0].startswith("Bottom line:") and words[1] == "a comparison."
    json.dumps(words)


def test_balanced_accuracy_beside_accuracy_when_the_test_classes_are_unequal():
    r = _results({"random": [0.60, 0.61, 0.62, 0.60, 0.59],
                  "entropy": [0.70, 0.72, 0.71, 0.69, 0.73]})
    r["balanced_accuracy"] = r["accuracy"] - 0.1
    sentence, = comparison_sentences(r, [("entropy", "random")])
    assert "balanced accuracy" not in sentence  # results without the record: as before
    r["test_class_ratio"] = 83 / 17
    sentence, = comparison_sentences(r, [("entropy", "random")])
    # the same differences, since balanced accuracy moved with accuracy here
    assert sentence.endswith("a verdict, as the interval excludes 0; balanced accuracy +10.6 "
                             "points [+9.2, +12.4].")
    assert "(0.710 over 5 seeds, balanced accuracy 0.610)" in bottom_line(r)
    # the headline can be balanced accuracy, accuracy then said beside it
    line = bottom_line(r, "balanced_accuracy")
    assert "highest mean balanced accuracy (0.610 over 5 seeds, accuracy 0.710)" in line
    sentence, = comparison_sentences(r, [("entropy", "random")], metric="balanced_accuracy")
    assert "by 10.6 points of balanced accuracy" in sentence and "; accuracy +10.6" in sentence
    r["test_class_ratio"] = 1.2  # nearly equal classes: accuracy alone
    assert "balanced" not in comparison_sentences(r, [("entropy", "random")])[0]


def test_holm_by_hand():
    from xal_sklearn.experiments import holm

    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan, 0.005]),
                               [0.03, 0.06, 0.06, np.nan, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_from_six_seeds_a_verdict_needs_the_signed_rank_test_to_agree():
    # the recipe on brain MRI (docs/results.md, section 7): margin+roi - random per seed,
    # in test images of 620. The percentile interval just excludes 0; Wilcoxon p = 0.16
    images = np.array([6, 4, 21, 19, 11, 9, -12, -9, 8, 12])
    r = _results({"random": [0.8] * 10, "margin+roi": list(0.8 + images / 620)}, seeds=10)
    sentence, = comparison_sentences(r, [("margin+roi", "random")])
    assert "(95 % interval of the difference +0.1 to +2.1 over 10 seeds)" in sentence
    # 0.13 rather than 0.16: the floats break the ties of |12| and |-12|, |9| and |-9|
    assert sentence.endswith("suggestive, not a verdict: the interval excludes 0 but the "
                             "signed-rank test does not agree (Wilcoxon p 0.13).")
    assert bottom_line(r).endswith("not a verdict: against every other arm the 95 % interval "
                                   "of the paired difference includes 0 or the signed-rank "
                                   "test does not agree, so the order may be chance.")
    from xal_sklearn.experiments import verdict_table
    from xal_sklearn.experiments._report import _fmt_diff
    row = verdict_table(r).set_index("strategy").loc["margin+roi"]
    assert _fmt_diff(row, "final")[2] == "suggestive (better by the interval only)"
    # all ten one way: both agree (exact p 2/1024)
    r = _results({"random": [0.8] * 10, "margin+roi": list(0.8 + np.abs(images) / 620)},
                 seeds=10)
    sentence, = comparison_sentences(r, [("margin+roi", "random")])
    assert sentence.endswith("a verdict, as the interval excludes 0 and the signed-rank test "
                             "agrees (Wilcoxon p 0.002).")
    assert bottom_line(r).endswith("(each 95 % interval of the paired difference excludes 0 "
                                   "and the signed-rank test agrees).")
