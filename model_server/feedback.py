"""Delayed true labels in the model server: what each prediction leaves behind, and the join.

A version whose config names `monitoring.probabilities_output` (and so `labels`) gets a
`PredictionRecorder`: after its batch returns, each request's rows are kept in the server's one
`PredictionStore` under the response id, with their predicted class, confidence, the time and
the request's span context. `FeedbackHub.apply` joins labels to them (the Feedback RPC), adds
each accepted one to its version's `QualityWindow`, links the server span to the predictions'
spans, and refreshes the quality reports the telemetry reads; `evaluate()` does the refresh
and removes expired predictions every `feedback_interval_s`. Everything here runs on the event
loop; the metric callbacks only read finished reports and plain counters.
"""

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

from model_server import telemetry
from model_server.errors import InvalidInputError, ModelNotFoundError
from model_server.model_config import ModelConfig
from monitoring.feedback import (
    MAX_ITEMS,
    NO_PREDICTION,
    FeedbackItem,
    FeedbackResult,
    ItemOutcome,
    ModelKey,
    PredictionStore,
    QualityReport,
    QualityWindow,
    join_labels,
)

SpanIds = tuple[int, int, int]
"""A prediction's request span as (trace id, span id, trace flags); 0s when it had none.

A plain tuple of ints, not the `SpanContext`: the garbage collector stops tracking a tuple that
holds only atoms, and so the store's entries. With 100,000 kept predictions, SpanContexts (and
their trace states) made every full collection walk 300,000 more objects, about 35 ms more, which
showed as the soak run's 100+ ms p99."""
Outcome = ItemOutcome[SpanIds]
"""The answer to one feedback item; an accepted one carries its prediction's span ids."""
CHUNK_ITEMS = 64
"""Items joined between two turns of the event loop: about 25 µs each (two thirds of it the
delay histogram's record), so inference waits about 2 ms at most."""
MAX_LINKS = 128
"""Links from a Feedback span to predictions (OpenTelemetry's default span link limit)."""


class PredictionRecorder:
    """Keeps one version's predictions for their labels (on the event loop, per request)."""

    __slots__ = ("_index", "_key", "_store", "_window")

    def __init__(
        self,
        store: PredictionStore[SpanIds],
        key: ModelKey,
        probabilities_index: int,
        window: QualityWindow,
    ) -> None:
        self._store = store
        self._key = key
        self._index = probabilities_index
        self._window = window

    def record(self, response_id: str, outputs: Sequence[np.ndarray]) -> None:
        """One request's answer: its rows of the probabilities output, under its response id."""
        probabilities = outputs[self._index]
        rows = len(probabilities)
        now = time.monotonic()
        span = trace.get_current_span().get_span_context()
        context = (span.trace_id, span.span_id, int(span.trace_flags))
        if rows == 1:  # the common case, without the per-row arrays: about 1 µs less
            # A NaN or infinite probability makes the sum non-finite (argmax would call NaN
            # the best class): such a row predicted nothing.
            if math.isfinite(probabilities.sum()):
                best = int(probabilities.argmax())
                confidence = probabilities.item(best)
            else:
                best, confidence = NO_PREDICTION, 0.0
            self._store.record(response_id, self._key, best, confidence, 1, now, context)
        else:
            finite = np.isfinite(probabilities).all(axis=1)
            self._store.record(
                response_id,
                self._key,
                np.where(finite, probabilities.argmax(axis=1), NO_PREDICTION),
                np.where(finite, probabilities.max(axis=1), 0.0),
                rows,
                now,
                context,
            )
        self._window.predicted(rows, now)


class FeedbackHub:
    """The server's prediction store, every version's quality window, the join and the reports."""

    def __init__(self, *, max_predictions: int, max_age_s: float, window_s: float) -> None:
        self.store: PredictionStore[SpanIds] = PredictionStore(
            max_predictions=max_predictions, max_age_s=max_age_s
        )
        self._window_s = window_s
        self._windows: dict[ModelKey, QualityWindow] = {}
        self._reports: list[tuple[Mapping[str, str], QualityReport]] = []

    def recorder(self, name: str, version: int, config: ModelConfig) -> PredictionRecorder | None:
        """The recorder of a loaded version, or None when its config has no probabilities
        output. A version loaded again keeps its window unless its labels changed."""
        output = config.monitoring.probabilities_output
        if output is None or not config.labels:
            return None
        key = (name, str(version))
        window = self._windows.get(key)
        if window is None or window.labels != tuple(config.labels):
            window = self._windows[key] = QualityWindow(config.labels, window_s=self._window_s)
        return PredictionRecorder(self.store, key, config.output_index(output), window)

    async def apply(
        self, name: str, version: str, items: Sequence[FeedbackItem], *, fan_out: bool = False
    ) -> list[Outcome]:
        """Join true labels to predictions of model `name` (and `version`, "" for any): one
        outcome per item. Refused as a whole only when there are no items or too many, or the
        model keeps no predictions. Works through the items in chunks, letting the event loop
        answer inference requests in between. With `fan_out` (a gateway asked every model
        server) an unknown id is answered but not counted: another server may keep it."""
        if not 1 <= len(items) <= MAX_ITEMS:
            raise InvalidInputError(f"items: {len(items)} given; send 1 to {MAX_ITEMS}")
        if not any(n == name and version in ("", v) for n, v in self._windows):
            model = f"{name}:{version}" if version else name
            raise ModelNotFoundError(
                f"model {model} keeps no predictions for feedback (its config needs labels and "
                "monitoring.probabilities_output)"
            )
        outcomes: list[Outcome] = []
        for start in range(0, len(items), CHUNK_ITEMS):
            if start:
                await asyncio.sleep(0)
            chunk = items[start : start + CHUNK_ITEMS]
            joined = join_labels(
                self.store, self._windows, (name, version), chunk, time.monotonic(), first=start
            )
            for outcome in joined:
                if outcome.joined is not None:
                    telemetry.label_delay.record(
                        outcome.joined.delay_s, telemetry.version_attributes(*outcome.joined.model)
                    )
            outcomes += joined
        for result, count in Counter(outcome.result for outcome in outcomes).items():
            if not (fan_out and result == FeedbackResult.UNKNOWN_ID):
                telemetry.feedback_items.add(count, telemetry.feedback_attributes(name, result))
        _link_predictions(trace.get_current_span(), outcomes)
        self.evaluate()
        return outcomes

    def evaluate(self) -> None:
        """Remove expired predictions and refresh the quality report of every version whose
        window holds predictions or labels (an empty window reports nothing)."""
        now = time.monotonic()
        self.store.sweep(now)
        reports = [
            (telemetry.version_attributes(*key), window.evaluate(now))
            for key, window in list(self._windows.items())
        ]
        self._reports = [
            (key, report) for key, report in reports if report.predictions or report.labelled
        ]

    def quality_reports(self) -> list[tuple[Mapping[str, str], QualityReport]]:
        """The latest report per version (read by the metric callbacks, on any thread)."""
        return self._reports

    def dropped_counts(self) -> list[tuple[Mapping[str, str], int]]:
        """Predictions that left the store without a label, per version and reason."""
        return [
            (telemetry.dropped_attributes(*model, reason), count)
            for model, reason, count in self.store.dropped_counts()
        ]

    @property
    def stored(self) -> int:
        """Predictions (rows) kept now."""
        return self.store.stored


def _link_predictions(span: trace.Span, outcomes: Sequence[Outcome]) -> None:
    """Link the Feedback span to the spans of the predictions that took a label: the wrong ones
    first, at most `MAX_LINKS`."""
    if not span.is_recording():
        return
    joined = [o.joined for o in outcomes if o.joined is not None and o.joined.context[0]]
    joined.sort(key=lambda j: j.correct)
    for prediction in joined[:MAX_LINKS]:
        trace_id, span_id, flags = prediction.context
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
        span.add_link(context, {telemetry.CORRECT: prediction.correct})
