"""Live quality of one model version over a sliding window of time, in slices.

Two clocks, one per question:

* quality (accuracy, macro F1, per-class recall) is over the labels that *arrived* in the
  window: a label counts when it arrives, however late its prediction was made;
* the labelled share is over the predictions *made* in the window: the share of them that has
  received a label so far. Predictions too recent for their label to have arrived pull it down:
  with every label arriving D seconds after its prediction it is about 1 - D / window_s.

The window is `slices` slices of `window_s / slices` seconds each; a slice that falls out is
zeroed and reused, so the window covers between `window_s` minus one slice and `window_s`
seconds. A slice holds the predictions made in it, how many of those have a label, and per
class the labels' true-positive, true-label and predicted-label counts (3 integers per class,
never a confusion matrix, so a large label set stays small).

Confined to one thread (the server's event loop), like the prediction store.
"""

from collections.abc import Sequence

import numpy as np

from monitoring.feedback.quality import QualityReport

SLICES = 60
"""Slices per window: the window moves in steps of window_s / 60."""
_TRUE_POSITIVE, _TRUE, _PREDICTED = 0, 1, 2
_NEVER = -(2**62)
"""Slice number of a slot never used."""


class QualityWindow:
    """Per-class label counts and prediction counts of one model version, sliding in time."""

    def __init__(self, labels: Sequence[str], *, window_s: float, slices: int = SLICES) -> None:
        if not labels:
            raise ValueError("labels must not be empty")
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        if slices < 1:
            raise ValueError(f"slices must be at least 1, got {slices}")
        self.labels = tuple(labels)
        self.window_s = window_s
        self._index = {label: index for index, label in reversed(list(enumerate(self.labels)))}
        self._slices = slices
        self._slice_s = window_s / slices
        self._numbers = [_NEVER] * slices
        self._predictions = [0] * slices
        self._answered = [0] * slices
        self._counts = np.zeros((slices, 3, len(self.labels)), dtype=np.int64)

    def index(self, label: str) -> int | None:
        """The class index of a label; None when it is not in the label set."""
        return self._index.get(label)

    def predicted(self, rows: int, now: float) -> None:
        """`rows` predictions were made at `now` (on the inference path: a few list operations)."""
        number = int(now / self._slice_s)
        slot = number % self._slices
        if self._numbers[slot] != number:
            self._reuse(slot, number)
        self._predictions[slot] += rows

    def labelled(self, true: int, predicted: int, predicted_at: float, now: float) -> None:
        """A label (class index `true`) arrived at `now` for a prediction (class index
        `predicted`, or a negative one when it predicted nothing: wrong, counted for no
        class) made at `predicted_at`."""
        number = int(now / self._slice_s)
        slot = number % self._slices
        if self._numbers[slot] != number:
            self._reuse(slot, number)
        counts = self._counts[slot]
        counts[_TRUE, true] += 1
        if predicted >= 0:
            counts[_PREDICTED, predicted] += 1
        if true == predicted:
            counts[_TRUE_POSITIVE, true] += 1
        made = int(predicted_at / self._slice_s)
        if made > number - self._slices and self._numbers[made % self._slices] == made:
            self._answered[made % self._slices] += 1

    def evaluate(self, now: float) -> QualityReport:
        """The quality over the window ending at `now`."""
        number = int(now / self._slice_s)
        live = [
            slot
            for slot, held in enumerate(self._numbers)
            if number - self._slices < held <= number
        ]
        return QualityReport.from_counts(
            self.labels,
            self._counts[live].sum(axis=0),
            predictions=sum(self._predictions[slot] for slot in live),
            answered=sum(self._answered[slot] for slot in live),
        )

    def _reuse(self, slot: int, number: int) -> None:
        self._numbers[slot] = number
        self._predictions[slot] = 0
        self._answered[slot] = 0
        self._counts[slot] = 0
