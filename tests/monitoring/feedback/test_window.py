"""The quality window: scikit-learn's numbers on the same pairs, and how it slides."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from monitoring.feedback import NO_PREDICTION, QualityReport, QualityWindow

LABELS = [f"class-{i}" for i in range(6)]


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_macro_f1_and_recall_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 400))
    truth = rng.integers(0, 5, size)  # class 5 is never a true label
    predicted = np.where(rng.random(size) < 0.7, truth, rng.integers(0, 6, size))
    window = QualityWindow(LABELS, window_s=60.0)
    for true, guess in zip(truth.tolist(), predicted.tolist(), strict=True):
        window.labelled(true, guess, predicted_at=1.0, now=2.0)
    report = window.evaluate(3.0)

    assert report.labelled == size
    assert report.accuracy == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)
    assert report.macro_f1 == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-12)
    present = sorted(set(truth.tolist()))
    expected = recall_score(truth, predicted, average=None, labels=present)
    assert [report.recall[c] for c in present] == pytest.approx(expected.tolist(), abs=1e-12)
    assert math.isnan(report.recall[5])


def test_a_row_that_predicted_nothing_is_wrong_and_predicts_no_class() -> None:
    truth = np.array([0, 1, 2, 5, 5, 3])
    predicted = np.array([0, NO_PREDICTION, 2, NO_PREDICTION, 5, 1])
    window = QualityWindow(LABELS, window_s=60.0)
    for true, guess in zip(truth.tolist(), predicted.tolist(), strict=True):
        window.labelled(true, guess, predicted_at=1.0, now=2.0)
    report = window.evaluate(3.0)

    # scikit-learn, with "predicted nothing" as a class outside the label set
    classes = sorted(set(truth.tolist()) | set(predicted.tolist()) - {NO_PREDICTION})
    assert report.accuracy == accuracy_score(truth, predicted) == 0.5
    assert report.macro_f1 == pytest.approx(
        f1_score(truth, predicted, average="macro", labels=classes), abs=1e-12
    )
    assert report.recall[5] == 0.5
    assert report.f1[4] != report.f1[4]  # never true, never predicted: NaN, not class -1's


def test_an_empty_window_has_no_numbers() -> None:
    report = QualityWindow(LABELS, window_s=60.0).evaluate(100.0)
    assert (report.labelled, report.predictions) == (0, 0)
    assert math.isnan(report.accuracy)
    assert math.isnan(report.macro_f1)
    assert math.isnan(report.labelled_share)
    assert all(math.isnan(value) for value in report.recall)


def test_labels_count_when_they_arrive_and_leave_with_their_slice() -> None:
    window = QualityWindow(["a", "b"], window_s=10.0, slices=10)  # 1-second slices
    window.labelled(0, 0, predicted_at=0.0, now=0.5)  # right
    window.labelled(0, 1, predicted_at=0.0, now=5.5)  # wrong, a late label for an old one
    assert window.evaluate(9.9).accuracy == 0.5
    assert window.evaluate(10.2).accuracy == 0.0  # the slice [0, 1) is out
    assert window.evaluate(14.9).labelled == 1
    assert window.evaluate(15.0).labelled == 0  # the window is [6, 16) now


def test_labelled_share_is_over_the_predictions_made_in_the_window() -> None:
    window = QualityWindow(["a", "b"], window_s=10.0, slices=10)
    window.predicted(4, now=0.5)
    window.predicted(6, now=3.5)
    window.labelled(1, 1, predicted_at=0.5, now=4.0)
    window.labelled(1, 1, predicted_at=3.5, now=4.0)
    window.labelled(1, 0, predicted_at=3.5, now=4.0)
    report = window.evaluate(5.0)
    assert (report.predictions, report.answered) == (10, 3)
    assert report.labelled_share == pytest.approx(0.3)
    later = window.evaluate(10.5)  # the 4 predictions of [0, 1) are out, and their label
    assert (later.predictions, later.answered, later.labelled) == (6, 2, 3)
    window.labelled(0, 0, predicted_at=0.5, now=10.5)  # its prediction is out of the window
    assert window.evaluate(10.5).answered == 2
    assert window.evaluate(10.5).labelled == 4


def test_a_reused_slice_starts_from_zero() -> None:
    window = QualityWindow(["a"], window_s=2.0, slices=2)
    window.predicted(5, now=0.1)
    window.predicted(1, now=2.1)  # the same slot as 0.1, a window later
    assert window.evaluate(2.2).predictions == 1


def test_macro_f1_counts_classes_seen_as_true_or_predicted() -> None:
    counts = np.array([[1, 0, 0], [2, 0, 0], [1, 1, 0]], dtype=np.int64)
    # class 0: TP 1, 2 true, 1 predicted -> F1 2/3; class 1: predicted once, never true -> 0
    report = QualityReport.from_counts(("x", "y", "z"), counts, predictions=0, answered=0)
    assert report.macro_f1 == pytest.approx((2 / 3 + 0) / 2)
    assert math.isnan(report.f1[2])


def test_label_index_and_arguments() -> None:
    window = QualityWindow(["a", "b", "a"], window_s=1.0)
    assert (window.index("a"), window.index("b"), window.index("c")) == (0, 1, None)
    with pytest.raises(ValueError, match="labels must not be empty"):
        QualityWindow([], window_s=1.0)
    with pytest.raises(ValueError, match="window_s must be positive"):
        QualityWindow(["a"], window_s=0.0)
