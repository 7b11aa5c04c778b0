"""A bounded store of recent predictions, keyed by response id, for joining delayed labels.

Per id it keeps what the join needs and nothing else: the model version, each row's predicted
class index and confidence, when it was made, and an opaque context (the model server keeps the
request's span context there, for the feedback span's link). Never the inputs. Two bounds:

* size: at most `max_predictions` predictions (rows); recording beyond evicts the oldest ids;
* age: an id older than `max_age_s` is expired by `sweep()` (called periodically) or when a
  label for it arrives.

Rows that leave without a label are counted per model version and reason (`evicted`, `expired`,
`replaced` when a newer prediction reuses the id, `id_too_long` for one never kept), so nothing
falls out silently. The ids of the last `max_predictions` removed entries are remembered (the
reason only), so a late label learns why its prediction is gone instead of hearing "unknown".

Cost: `record` is on the inference path. It builds one tuple and does a few dict operations
(about 0.4 µs; once the store is full, evicting the oldest entry adds 0.4 to 1.5 µs, measured on
the shared 2-vCPU machine); no lock. The store is
confined to one thread (the server's event loop): record, label and sweep from it only. Other
threads may read `stored` and `dropped_counts()` (plain integers, copied under the GIL).
"""

from collections import Counter, OrderedDict
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

C = TypeVar("C")
"""The context kept with each prediction (opaque to the store)."""

MAX_ID_CHARS = 256
"""Longest id kept; a prediction with a longer one is counted (`id_too_long`), not kept."""
ModelKey = tuple[str, str]
"""(model name, version)."""
Classes = int | npt.NDArray[np.intp]
"""Predicted class index: an int for a one-row prediction, else one per row; `NO_PREDICTION`
for a row whose probabilities were not all finite."""
NO_PREDICTION = -1
"""The class index of a row that predicted nothing (a NaN or infinite probability)."""
Confidences = float | npt.NDArray[np.floating]
"""Highest class probability: a float for a one-row prediction, else one per row."""


# Reasons are plain strings inside the store: an Enum member hashes in Python, a str in C.
_EVICTED, _EXPIRED, _REPLACED, _ID_TOO_LONG = "evicted", "expired", "replaced", "id_too_long"


class Removal(StrEnum):
    """Why a prediction left the store."""

    EVICTED = _EVICTED
    """The store was full (`max_predictions`); the oldest ids make room."""
    EXPIRED = _EXPIRED
    """Older than `max_age_s`."""
    REPLACED = _REPLACED
    """A newer prediction was recorded under the same id."""
    ID_TOO_LONG = _ID_TOO_LONG
    """Never kept: its id is longer than `MAX_ID_CHARS` (memory is bounded per id too)."""


class Prediction(NamedTuple, Generic[C]):
    """What the store keeps for one id."""

    model: ModelKey
    classes: Classes
    confidences: Confidences
    rows: int
    at: float
    """Clock time (the store's caller's clock, e.g. `time.monotonic()`) it was made."""
    context: C

    def row(self, row: int) -> tuple[int, float]:
        """(predicted class index, confidence) of one row."""
        classes, confidences = self.classes, self.confidences
        if isinstance(classes, int):
            return classes, float(confidences)
        assert not isinstance(confidences, float)
        return int(classes[row]), float(confidences[row])


_Entry = tuple[ModelKey, Classes, Confidences, int, float, C]
"""A `Prediction` as stored: a plain tuple is ten times cheaper to build."""


class PredictionStore(Generic[C]):
    """Recent predictions by id, bounded by count and age (see the module docstring)."""

    def __init__(self, *, max_predictions: int, max_age_s: float) -> None:
        if max_predictions < 1:
            raise ValueError(f"max_predictions must be at least 1, got {max_predictions}")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        self.max_predictions = max_predictions
        self.max_age_s = max_age_s
        self._entries: OrderedDict[str, _Entry[C]] = OrderedDict()
        self._labelled: dict[str, set[int]] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._dropped: Counter[tuple[ModelKey, str]] = Counter()
        self.stored = 0
        """Predictions (rows) kept now."""

    def record(
        self,
        prediction_id: str,
        model: ModelKey,
        classes: Classes,
        confidences: Confidences,
        rows: int,
        at: float,
        context: C,
    ) -> None:
        """Keep one request's predictions under its id (a newer one replaces an older one)."""
        if len(prediction_id) > MAX_ID_CHARS:
            self._dropped[model, _ID_TOO_LONG] += rows
            return
        entries = self._entries
        if prediction_id in entries:
            self._remove(prediction_id, entries.pop(prediction_id), _REPLACED)
        entries[prediction_id] = (model, classes, confidences, rows, at, context)
        self.stored += rows
        while self.stored > self.max_predictions:
            self._remove(*entries.popitem(last=False), _EVICTED)

    def find(self, prediction_id: str, now: float) -> Prediction[C] | Removal | None:
        """The prediction kept under this id; why it is gone, if it was removed lately; None
        if the store knows nothing of it. An entry found too old is expired now."""
        entry = self._entries.get(prediction_id)
        if entry is None:
            gone = self._gone.get(prediction_id)
            return None if gone is None else Removal(gone)
        if now - entry[4] > self.max_age_s:
            del self._entries[prediction_id]
            self._remove(prediction_id, entry, _EXPIRED)
            return Removal.EXPIRED
        return Prediction(*entry)

    def mark_labelled(self, prediction_id: str, row: int) -> bool:
        """Record that this row of a prediction `find` just returned got its label; False if
        it already had one."""
        labelled = self._labelled.setdefault(prediction_id, set())
        if row in labelled:
            return False
        labelled.add(row)
        return True

    def sweep(self, now: float) -> int:
        """Expire every id older than `max_age_s`; returns how many."""
        entries, oldest_allowed, expired = self._entries, now - self.max_age_s, 0
        while entries:
            prediction_id, entry = next(iter(entries.items()))
            if entry[4] >= oldest_allowed:
                break
            del entries[prediction_id]
            self._remove(prediction_id, entry, _EXPIRED)
            expired += 1
        return expired

    def dropped_counts(self) -> list[tuple[ModelKey, Removal, int]]:
        """Rows that left without a label, per model version and reason, since the start."""
        counts = list(self._dropped.items())
        return [(model, Removal(reason), count) for (model, reason), count in counts]

    def _remove(self, prediction_id: str, entry: _Entry[C], reason: str) -> None:
        rows = entry[3]
        self.stored -= rows
        labelled = self._labelled.pop(prediction_id, None)
        unlabelled = rows if labelled is None else rows - len(labelled)
        if unlabelled:
            self._dropped[entry[0], reason] += unlabelled
        if reason != _REPLACED:  # a replaced id is kept, under its new prediction
            self._gone[prediction_id] = reason
            if len(self._gone) > self.max_predictions:
                self._gone.popitem(last=False)
