"""Joining true labels to kept predictions: one outcome per item, never a failed batch.

Each item names a prediction by its id (and row, for a request of several rows) and gives the
true label. In order, an item is refused when: its prediction is not kept (`unknown_id`,
`expired`, `evicted`), it was made by another model or version (`other_model`), the row does
not exist (`invalid_row`), the label is not in the model version's label set (`invalid_label`),
or the row already has a label (`duplicate`: the first label stands). Otherwise it is `ok`: the
label joins its prediction and counts in that version's quality window. Messages name the item
(`items[3].label: ...`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic

from monitoring.feedback.store import (
    MAX_ID_CHARS,
    NO_PREDICTION,
    C,
    ModelKey,
    PredictionStore,
    Removal,
)
from monitoring.feedback.window import QualityWindow

MAX_ITEMS = 10_000
"""Most items in one feedback call."""
_LABELS_SHOWN = 10
"""Labels named in an invalid_label message."""


class FeedbackResult(StrEnum):
    """The outcome of one feedback item."""

    OK = "ok"
    UNKNOWN_ID = "unknown_id"
    EXPIRED = "expired"
    EVICTED = "evicted"
    OTHER_MODEL = "other_model"
    INVALID_ROW = "invalid_row"
    INVALID_LABEL = "invalid_label"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """A true label for one row of one prediction."""

    id: str
    """The id of the inference response."""
    label: str
    """The true label, from the model's label set."""
    row: int = 0
    """Which row of the request (0 for a request of one row)."""


@dataclass(frozen=True, slots=True)
class Joined(Generic[C]):
    """The prediction an accepted label was joined to."""

    model: ModelKey
    predicted: str
    """The predicted label; "" when the row predicted nothing (a NaN or infinite
    probability), which counts as wrong."""
    confidence: float
    """Its probability; 0 when it predicted nothing."""
    correct: bool
    delay_s: float
    """Seconds from the prediction to its label."""
    context: C
    """The context kept with the prediction (the model server's: its request's span context)."""


@dataclass(frozen=True, slots=True)
class ItemOutcome(Generic[C]):
    """The answer to one feedback item."""

    result: FeedbackResult
    message: str = ""
    """Empty when ok; else what is wrong, naming the item's field."""
    joined: Joined[C] | None = None
    """Set when ok."""


_GONE = {Removal.EXPIRED: FeedbackResult.EXPIRED, Removal.EVICTED: FeedbackResult.EVICTED}


def join_labels(
    store: PredictionStore[C],
    windows: Mapping[ModelKey, QualityWindow],
    model: ModelKey,
    items: Sequence[FeedbackItem],
    now: float,
    *,
    first: int = 0,
) -> list[ItemOutcome[C]]:
    """Join each item to its prediction; `model` is (name, version), version "" for any.

    `windows` holds the quality window of every model version whose predictions the store
    keeps; an accepted label is added to its version's window. `first` is the index of the
    first item in the whole request, for the messages (`items[first]`)."""
    return [
        _join(store, windows, model, index, item, now)
        for index, item in enumerate(items, start=first)
    ]


def _join(
    store: PredictionStore[C],
    windows: Mapping[ModelKey, QualityWindow],
    model: ModelKey,
    index: int,
    item: FeedbackItem,
    now: float,
) -> ItemOutcome[C]:
    field = f"items[{index}]"
    if not item.id:
        return ItemOutcome(FeedbackResult.UNKNOWN_ID, f"{field}.id: is empty")
    if len(item.id) > MAX_ID_CHARS:  # never kept; and not echoed, however long
        return ItemOutcome(
            FeedbackResult.UNKNOWN_ID,
            f"{field}.id: has {len(item.id)} characters; a prediction whose id is longer than "
            f"{MAX_ID_CHARS} is never kept",
        )
    found = store.find(item.id, now)
    if found is None:
        return ItemOutcome(
            FeedbackResult.UNKNOWN_ID,
            f"{field}.id: no prediction {item.id!r} is kept (never made here, or removed long ago)",
        )
    if isinstance(found, Removal):
        limit = (
            f"max age {store.max_age_s:g} s"
            if found is Removal.EXPIRED
            else f"max {store.max_predictions} predictions kept"
        )
        return ItemOutcome(
            _GONE[found], f"{field}.id: prediction {item.id!r} was {found.value} ({limit})"
        )
    name, version = model
    if found.model[0] != name or (version and found.model[1] != version):
        asked = f"{name}:{version}" if version else name
        return ItemOutcome(
            FeedbackResult.OTHER_MODEL,
            f"{field}.id: prediction {item.id!r} was made by {found.model[0]}:{found.model[1]}, "
            f"not {asked}",
        )
    if not 0 <= item.row < found.rows:
        return ItemOutcome(
            FeedbackResult.INVALID_ROW,
            f"{field}.row: {item.row} is not a row of prediction {item.id!r} "
            f"({found.rows} row{'s' if found.rows > 1 else ''}, from 0)",
        )
    window = windows[found.model]
    true = window.index(item.label)
    if true is None:
        shown = ", ".join(repr(label) for label in window.labels[:_LABELS_SHOWN])
        more = ", ..." if len(window.labels) > _LABELS_SHOWN else ""
        return ItemOutcome(
            FeedbackResult.INVALID_LABEL,
            f"{field}.label: {item.label!r} is not a label of {found.model[0]}:{found.model[1]} "
            f"({shown}{more})",
        )
    if not store.mark_labelled(item.id, item.row):
        return ItemOutcome(
            FeedbackResult.DUPLICATE,
            f"{field}: row {item.row} of prediction {item.id!r} already has a label; the first "
            "one stands",
        )
    predicted, confidence = found.row(item.row)
    if predicted >= len(window.labels):  # the version was loaded again with fewer labels
        return ItemOutcome(
            FeedbackResult.OTHER_MODEL,
            f"{field}.id: prediction {item.id!r} was made by {found.model[0]}:{found.model[1]} "
            "before it was loaded again with another label set",
        )
    window.labelled(true, predicted, found.at, now)
    return ItemOutcome(
        FeedbackResult.OK,
        joined=Joined(
            model=found.model,
            predicted="" if predicted == NO_PREDICTION else window.labels[predicted],
            confidence=confidence,
            correct=true == predicted,
            delay_s=now - found.at,
            context=found.context,
        ),
    )
