"""The prediction store: what it keeps, its two bounds, and that what falls out is counted."""

import numpy as np
import pytest

from monitoring.feedback import Prediction, PredictionStore, Removal
from monitoring.feedback.store import MAX_ID_CHARS

DIGITS = ("digits", "1")


def _store(max_predictions: int = 100, max_age_s: float = 60.0) -> PredictionStore[str]:
    return PredictionStore(max_predictions=max_predictions, max_age_s=max_age_s)


def _one(store: PredictionStore[str], prediction_id: str, at: float = 0.0) -> None:
    store.record(prediction_id, DIGITS, 7, 0.9, 1, at, f"context of {prediction_id}")


def test_keeps_only_what_the_join_needs() -> None:
    store = _store()
    _one(store, "a", at=5.0)
    classes, confidences = np.array([3, 1]), np.array([0.5, 0.75], dtype=np.float32)
    store.record("b", DIGITS, classes, confidences, 2, 6.0, "ctx-b")
    assert store.find("a", 10.0) == Prediction(DIGITS, 7, 0.9, 1, 5.0, "context of a")
    found = store.find("b", 10.0)
    assert isinstance(found, Prediction)
    assert (found.row(0), found.row(1)) == ((3, 0.5), (1, 0.75))
    assert Prediction._fields == ("model", "classes", "confidences", "rows", "at", "context")
    assert store.stored == 3
    assert store.find("c", 10.0) is None


def test_the_oldest_are_evicted_by_size_and_counted_per_unlabelled_row() -> None:
    store = _store(max_predictions=4)
    store.record("multi", DIGITS, np.array([1, 2, 3]), np.ones(3), 3, 0.0, "")
    assert store.mark_labelled("multi", 1)
    _one(store, "a", at=1.0)
    _one(store, "b", at=2.0)  # 5 rows: "multi" goes, with its two unlabelled rows
    assert store.find("multi", 3.0) is Removal.EVICTED
    assert store.stored == 2
    assert store.dropped_counts() == [(DIGITS, Removal.EVICTED, 2)]
    for index in range(3):
        _one(store, f"c{index}", at=3.0)
    assert store.find("a", 4.0) is Removal.EVICTED
    assert isinstance(store.find("c2", 4.0), Prediction)
    assert store.dropped_counts() == [(DIGITS, Removal.EVICTED, 3)]


def test_a_request_larger_than_the_store_is_evicted_at_once() -> None:
    store = _store(max_predictions=2)
    store.record("big", DIGITS, np.zeros(3, dtype=np.intp), np.ones(3), 3, 0.0, "")
    assert store.stored == 0
    assert store.find("big", 0.0) is Removal.EVICTED
    assert store.dropped_counts() == [(DIGITS, Removal.EVICTED, 3)]


def test_old_predictions_expire_on_sweep_and_on_lookup() -> None:
    store = _store(max_age_s=10.0)
    _one(store, "old", at=0.0)
    _one(store, "older-looked-up", at=1.0)
    _one(store, "new", at=8.0)
    assert store.sweep(10.5) == 1  # "old" only: 10.5 - 1.0 is not more than 10
    assert store.find("old", 10.5) is Removal.EXPIRED
    assert store.find("older-looked-up", 11.5) is Removal.EXPIRED
    assert isinstance(store.find("new", 11.5), Prediction)
    assert store.stored == 1
    assert store.dropped_counts() == [(DIGITS, Removal.EXPIRED, 2)]


def test_a_labelled_prediction_leaves_uncounted() -> None:
    store = _store(max_age_s=1.0)
    _one(store, "a")
    assert store.mark_labelled("a", 0)
    store.sweep(5.0)
    assert store.stored == 0
    assert store.dropped_counts() == []


def test_a_reused_id_replaces_the_older_prediction() -> None:
    store = _store()
    _one(store, "same", at=0.0)
    store.record("same", ("other", "2"), 4, 0.5, 1, 1.0, "newer")
    found = store.find("same", 2.0)
    assert isinstance(found, Prediction)
    assert (found.model, found.context) == (("other", "2"), "newer")
    assert store.stored == 1
    assert store.dropped_counts() == [(DIGITS, Removal.REPLACED, 1)]


def test_duplicates_are_refused_per_row() -> None:
    store = _store()
    store.record("m", DIGITS, np.array([1, 2]), np.ones(2), 2, 0.0, "")
    assert store.mark_labelled("m", 0)
    assert not store.mark_labelled("m", 0)
    assert store.mark_labelled("m", 1)


def test_an_overlong_id_is_counted_not_kept() -> None:
    store = _store()
    _one(store, "x" * (MAX_ID_CHARS + 1))
    _one(store, "y" * MAX_ID_CHARS)
    assert store.stored == 1
    assert store.dropped_counts() == [(DIGITS, Removal.ID_TOO_LONG, 1)]


def test_removed_ids_are_remembered_within_a_bound() -> None:
    store = _store(max_predictions=2)
    for index in range(6):
        _one(store, f"r{index}")
    assert store.find("r3", 0.0) is Removal.EVICTED  # among the last two removed
    assert store.find("r0", 0.0) is None  # forgotten: the reason is kept for 2 ids only


@pytest.mark.parametrize(
    ("max_predictions", "max_age_s", "message"),
    [(0, 1.0, "max_predictions must be at least 1"), (1, 0.0, "max_age_s must be positive")],
)
def test_bounds_are_checked(max_predictions: int, max_age_s: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PredictionStore[str](max_predictions=max_predictions, max_age_s=max_age_s)
