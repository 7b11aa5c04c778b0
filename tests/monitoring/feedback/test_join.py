"""Joining labels to predictions: one outcome per item, in order, never a failed batch."""

import numpy as np
import pytest

from monitoring.feedback import (
    FeedbackItem,
    FeedbackResult,
    PredictionStore,
    QualityWindow,
    join_labels,
)

V1, V2, OTHER = ("digits", "1"), ("digits", "2"), ("other", "1")
LABELS = ["cat", "dog", "eel"]


@pytest.fixture
def store() -> PredictionStore[str]:
    """`single` (dog, by v1), `triple` (cat, eel, dog by v2), `elsewhere` (by `other`)."""
    store = PredictionStore[str](max_predictions=100, max_age_s=60.0)
    store.record("single", V1, 1, 0.8, 1, 10.0, "trace-single")
    store.record("triple", V2, np.array([0, 2, 1]), np.array([0.5, 0.6, 0.7]), 3, 11.0, "t3")
    store.record("elsewhere", OTHER, 0, 0.9, 1, 12.0, "trace-other")
    return store


@pytest.fixture
def windows() -> dict[tuple[str, str], QualityWindow]:
    """A window per model version the store holds predictions of."""
    return {key: QualityWindow(LABELS, window_s=60.0) for key in (V1, V2, OTHER)}


def test_every_outcome_in_item_order(
    store: PredictionStore[str], windows: dict[tuple[str, str], QualityWindow]
) -> None:
    items = [
        FeedbackItem("single", "dog"),
        FeedbackItem("single", "cat"),
        FeedbackItem("triple", "cat", row=1),
        FeedbackItem("triple", "cow", row=0),
        FeedbackItem("triple", "dog", row=3),
        FeedbackItem("elsewhere", "dog"),
        FeedbackItem("unheard-of", "dog"),
        FeedbackItem("", "dog"),
    ]
    outcomes = join_labels(store, windows, ("digits", ""), items, now=25.0)
    assert [o.result for o in outcomes] == [
        FeedbackResult.OK,
        FeedbackResult.DUPLICATE,
        FeedbackResult.OK,
        FeedbackResult.INVALID_LABEL,
        FeedbackResult.INVALID_ROW,
        FeedbackResult.OTHER_MODEL,
        FeedbackResult.UNKNOWN_ID,
        FeedbackResult.UNKNOWN_ID,
    ]
    right, wrong = outcomes[0].joined, outcomes[2].joined
    assert right is not None
    assert wrong is not None
    assert (right.model, right.predicted, right.correct, right.context) == (
        V1, "dog", True, "trace-single"
    )  # fmt: skip
    assert right.confidence == pytest.approx(0.8)
    assert right.delay_s == pytest.approx(15.0)
    assert (wrong.model, wrong.predicted, wrong.correct, wrong.delay_s) == (V2, "eel", False, 14.0)
    assert outcomes[3].message == (
        "items[3].label: 'cow' is not a label of digits:2 ('cat', 'dog', 'eel')"
    )
    assert (
        outcomes[4].message
        == "items[4].row: 3 is not a row of prediction 'triple' (3 rows, from 0)"
    )
    assert outcomes[5].message.startswith("items[5].id: prediction 'elsewhere' was made by other:1")
    assert outcomes[7].message == "items[7].id: is empty"
    assert all(o.joined is None for i, o in enumerate(outcomes) if i not in (0, 2))

    assert windows[V1].evaluate(25.0).accuracy == 1.0
    assert windows[V2].evaluate(25.0).accuracy == 0.0
    assert windows[OTHER].evaluate(25.0).labelled == 0


def test_a_named_version_takes_only_its_predictions(
    store: PredictionStore[str], windows: dict[tuple[str, str], QualityWindow]
) -> None:
    items = [FeedbackItem("single", "dog"), FeedbackItem("triple", "cat")]
    outcomes = join_labels(store, windows, V2, items, now=20.0)
    assert [o.result for o in outcomes] == [FeedbackResult.OTHER_MODEL, FeedbackResult.OK]
    assert "made by digits:1, not digits:2" in outcomes[0].message


def test_gone_predictions_say_why(
    store: PredictionStore[str], windows: dict[tuple[str, str], QualityWindow]
) -> None:
    outcomes = join_labels(store, windows, V1, [FeedbackItem("single", "dog")], now=100.0)
    assert outcomes[0].result is FeedbackResult.EXPIRED
    assert outcomes[0].message == "items[0].id: prediction 'single' was expired (max age 60 s)"
    small = PredictionStore[str](max_predictions=1, max_age_s=60.0)
    small.record("first", V1, 0, 0.5, 1, 0.0, "")
    small.record("second", V1, 0, 0.5, 1, 0.0, "")
    [evicted] = join_labels(small, windows, V1, [FeedbackItem("first", "cat")], now=1.0)
    assert evicted.result is FeedbackResult.EVICTED
    assert "max 1 predictions kept" in evicted.message


def test_a_prediction_from_before_a_smaller_label_set_is_refused(
    store: PredictionStore[str],
) -> None:
    reloaded = {V2: QualityWindow(["cat", "dog"], window_s=60.0)}  # "triple" row 1 said class 2
    [outcome] = join_labels(store, reloaded, V2, [FeedbackItem("triple", "dog", row=1)], 20.0)
    assert outcome.result is FeedbackResult.OTHER_MODEL
    assert outcome.message == (
        "items[0].id: prediction 'triple' was made by digits:2 before it was loaded again with "
        "another label set"
    )


def test_an_id_too_long_to_be_kept_says_so_without_echoing_it(
    store: PredictionStore[str], windows: dict[tuple[str, str], QualityWindow]
) -> None:
    store.record("x" * 300, V1, 1, 0.8, 1, 10.0, "trace-long")  # counted, not kept

    (outcome,) = join_labels(store, windows, V1, [FeedbackItem("x" * 300, "dog")], now=11.0)

    assert outcome.result is FeedbackResult.UNKNOWN_ID
    assert outcome.message == (
        "items[0].id: has 300 characters; a prediction whose id is longer than 256 is never kept"
    )
