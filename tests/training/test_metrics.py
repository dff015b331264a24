import numpy as np
import pytest

from geomatch.training import metrics


def test_perfect_separator_is_zero():
    assert metrics.fpr95([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0


def test_tie_between_classes_is_interpolated_along_the_roc_segment():
    # Three positives above every negative; the fourth positive ties two negatives at 0.5. The ROC goes
    # from (fpr 0, tpr 0.75) straight to (fpr 0.5, tpr 1.0): at tpr 0.95, fpr = 0.2 / 0.25 * 0.5 = 0.4.
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.5, 0.5, 0.5, 0.2, 0.1]
    assert metrics.fpr95(labels, scores) == pytest.approx(0.4)
    # The sorted-positive-threshold definition would say 0.5 here: the seed's is not that one.
    threshold = np.sort(np.array(scores[:4]))[::-1][int(np.ceil(0.95 * 4)) - 1]
    assert np.mean(np.array(scores[4:]) >= threshold) == 0.5


def test_vertical_segment_gives_its_fpr():
    # ROC (0,0.25),(0,0.5),(0.25,0.5),(0.25,0.75),(0.5,0.75),(0.5,1.0): tpr 0.95 lies on fpr = 0.5.
    labels = [1, 1, 0, 1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    assert metrics.fpr95(labels, scores) == pytest.approx(0.5)


def test_constant_scores_follow_the_diagonal():
    assert metrics.fpr95([0, 1, 0, 1], [0.3] * 4) == pytest.approx(0.95)


def test_blocks_average_per_block():
    good = ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    bad = ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    labels = np.array(good[0] + bad[0])
    scores = np.array(good[1] + bad[1])
    assert metrics.fpr95_blocks(labels, scores, 2) == pytest.approx((0.0 + 1.0) / 2)
    assert metrics.fpr95_blocks(labels, scores, 1) == pytest.approx(metrics.fpr95(labels, scores))


def test_accuracy_counts_half_as_non_match_and_auc():
    assert metrics.accuracy([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == 0.75
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    s = metrics.summary([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert s["fpr95_pct"] == 0.0 and s["pairs"] == 4 and s["positives"] == 2


def test_one_class_or_nan_is_an_error():
    with pytest.raises(ValueError, match="both"):
        metrics.fpr95([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        metrics.fpr95([0, 1], [np.nan, 0.3])
