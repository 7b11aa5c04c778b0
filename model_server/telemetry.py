"""The model server's instruments, created once at import; only the OpenTelemetry API.

Attributes are bounded: model name and version come from the repository (never from an
unknown name a client sent), status is a gRPC code name, reason and label come from fixed sets.
"""

import functools
import math
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Protocol

import numpy as np
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from model_server import __version__
from monitoring.drift import DriftReport
from monitoring.feedback import QualityReport
from otel import DURATION_BUCKETS_S
from otel.attributes import MODEL_NAME as MODEL_NAME
from otel.attributes import MODEL_VERSION as MODEL_VERSION
from otel.attributes import RESULT as RESULT
from otel.attributes import STATUS as STATUS
from otel.attributes import UNKNOWN_MODEL as UNKNOWN_MODEL

SCOPE = "model_server"

#: Rows per forward pass.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Highest class probability.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

REASON = "reason"
LABEL = "label"

tracer = trace.get_tracer(SCOPE, __version__)
_meter = metrics.get_meter(SCOPE, __version__)

request_duration = _meter.create_histogram(
    "inferwatch.server.request.duration",
    unit="s",
    description="Time from receiving a ModelInfer call to answering it.",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
)
# The request count and the in-flight count are kept in plain ints on the request path and
# reported by observable instruments at collection: two fewer SDK measurements per request.
_answered: Counter[tuple[str, str, str]] = Counter()
_in_flight: Counter[str] = Counter()


def record_request(name: str, version: str, status: str, seconds: float) -> None:
    """One answered ModelInfer call: its count and its duration (with the current exemplar)."""
    _answered[name, version, status] += 1
    request_duration.record(seconds, request_attributes(name, version, status))


def request_started(name: str) -> None:
    """A ModelInfer call for this (bounded) model name is being handled."""
    _in_flight[name] += 1


def request_finished(name: str) -> None:
    """The ModelInfer call counted by `request_started` has been answered."""
    _in_flight[name] -= 1


def _answered_counts(_: CallbackOptions) -> Iterable[Observation]:
    for key, count in list(_answered.items()):  # list(): a copy taken under the GIL
        yield Observation(count, dict(request_attributes(*key)))


def _in_flight_counts(_: CallbackOptions) -> Iterable[Observation]:
    for name, count in list(_in_flight.items()):
        yield Observation(count, dict(model_attributes(name)))


_meter.create_observable_counter(
    "inferwatch.server.requests",
    callbacks=[_answered_counts],
    unit="{request}",
    description="ModelInfer calls answered, by model, version and gRPC status.",
)
_meter.create_observable_gauge(
    "inferwatch.server.requests.in_flight",
    callbacks=[_in_flight_counts],
    unit="{request}",
    description="ModelInfer calls being handled now.",
)
rejected = _meter.create_counter(
    "inferwatch.server.requests.rejected",
    unit="{request}",
    description="Requests refused before computing: reason queue_full or deadline.",
)
queue_duration = _meter.create_histogram(
    "inferwatch.batch.queue.duration",
    unit="s",
    description="Time a request waited in its model's queue before its batch ran.",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
)
forward_duration = _meter.create_histogram(
    "inferwatch.batch.forward.duration",
    unit="s",
    description="Duration of one forward pass over a batch.",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
)
batch_size = _meter.create_histogram(
    "inferwatch.batch.size",
    unit="{row}",
    description="Rows per forward pass.",
    explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS,
)
confidence = _meter.create_histogram(
    "inferwatch.model.confidence",
    unit="1",
    description="Highest class probability of each prediction.",
    explicit_bucket_boundaries_advisory=CONFIDENCE_BUCKETS,
)
# Predicted labels are counted like requests: a plain Counter per batch, reported at collection
# (one SDK measurement per distinct label of every batch would cost more than the forward pass).
_predicted: Counter[tuple[tuple[tuple[str, str], ...], str]] = Counter()


def _predicted_counts(_: CallbackOptions) -> Iterable[Observation]:
    for (attributes, label), count in list(_predicted.items()):
        yield Observation(count, {**dict(attributes), LABEL: label})


_meter.create_observable_counter(
    "inferwatch.model.predictions",
    callbacks=[_predicted_counts],
    unit="{prediction}",
    description="Predicted labels, by label from the model's label set.",
)


class ModelStateSource(Protocol):
    """Something that can report queue depth and readiness per model version."""

    def queue_depths(self) -> Iterable[tuple[Mapping[str, str], int]]:
        """(attributes, requests waiting) per loaded version."""

    def readiness(self) -> Iterable[tuple[Mapping[str, str], bool]]:
        """(attributes, ready) per known version."""

    def drift_reports(self) -> Iterable[tuple[Mapping[str, str], DriftReport]]:
        """(attributes, latest drift report) per monitored version."""


_sources: "weakref.WeakSet[ModelStateSource]" = weakref.WeakSet()


def observe(source: ModelStateSource) -> None:
    """Report this source's queue depths and readiness from now on."""
    _sources.add(source)


def forget(source: ModelStateSource) -> None:
    """Stop reporting a source (its server stopped)."""
    _sources.discard(source)


def _queue_depth(_: CallbackOptions) -> Iterable[Observation]:
    for source in list(_sources):
        for attributes, depth in source.queue_depths():
            yield Observation(depth, dict(attributes))


def _model_ready(_: CallbackOptions) -> Iterable[Observation]:
    for source in list(_sources):
        for attributes, ready in source.readiness():
            yield Observation(1 if ready else 0, dict(attributes))


_meter.create_observable_gauge(
    "inferwatch.batch.queue.depth",
    callbacks=[_queue_depth],
    unit="{request}",
    description="Requests waiting in a model version's queue.",
)
_meter.create_observable_gauge(
    "inferwatch.model.ready",
    callbacks=[_model_ready],
    unit="",
    description="1 when the model version can serve, else 0.",
)


FEATURE = "feature"
STATISTIC = "statistic"


def _observations(
    values: Iterable[tuple[float, Mapping[str, str]]],
) -> Iterator[Observation]:
    for value, attributes in values:
        if math.isfinite(value):  # a statistic without enough data is NaN: no point
            yield Observation(value, dict(attributes))


def _drift_gauge(
    name: str,
    unit: str,
    description: str,
    values: Callable[[DriftReport, Mapping[str, str]], Iterable[tuple[float, Mapping[str, str]]]],
) -> None:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        for source in list(_sources):
            for attributes, report in source.drift_reports():
                yield from _observations(values(report, attributes))

    _meter.create_observable_gauge(name, callbacks=[callback], unit=unit, description=description)


_drift_gauge(
    "inferwatch.drift.score",
    "",
    "Overall drift score of the latest evaluation: the largest statistic / critical value; "
    ">= 1 is drift.",
    lambda report, attributes: [(report.score, attributes)],
)
_drift_gauge(
    "inferwatch.drift.detected",
    "",
    "1 when the latest evaluation called the window drifted, else 0.",
    lambda report, attributes: [(1.0 if report.drifted else 0.0, attributes)],
)
_drift_gauge(
    "inferwatch.drift.window.samples",
    "{row}",
    "Rows in the drift window at the latest evaluation.",
    lambda report, attributes: [(report.window.rows, attributes)],
)
_drift_gauge(
    "inferwatch.drift.features.drifted",
    "{feature}",
    "Monitored input features called drifted at the latest evaluation.",
    lambda report, attributes: [(report.drifted_features, attributes)],
)
_drift_gauge(
    "inferwatch.drift.feature.score",
    "",
    "Per-feature drift score: KS statistic / its critical value; >= 1 is drift.",
    lambda report, attributes: [
        (feature.score, {**attributes, FEATURE: feature.name}) for feature in report.features
    ],
)
_drift_gauge(
    "inferwatch.drift.feature.statistic",
    "",
    "Per-feature drift statistics: ks, psi, wasserstein (normalised).",
    lambda report, attributes: [
        (getattr(feature, statistic), {**attributes, FEATURE: feature.name, STATISTIC: statistic})
        for feature in report.features
        for statistic in ("ks", "psi", "wasserstein")
    ],
)
_drift_gauge(
    "inferwatch.drift.prediction.score",
    "",
    "Prediction drift score: chi-squared of the predicted labels / its critical value.",
    lambda report, attributes: (
        [] if report.prediction is None else [(report.prediction.score, attributes)]
    ),
)
_drift_gauge(
    "inferwatch.drift.prediction.statistic",
    "",
    "Prediction drift statistics: js_distance, chi2_pvalue.",
    lambda report, attributes: (
        []
        if report.prediction is None
        else [
            (getattr(report.prediction, statistic), {**attributes, STATISTIC: statistic})
            for statistic in ("js_distance", "chi2_pvalue")
        ]
    ),
)
_drift_gauge(
    "inferwatch.drift.confidence.statistic",
    "",
    "Shift of the confidence distribution: ks, mean_shift, wasserstein.",
    lambda report, attributes: (
        []
        if report.confidence is None
        else [
            (getattr(report.confidence, statistic), {**attributes, STATISTIC: statistic})
            for statistic in ("ks", "mean_shift", "wasserstein")
        ]
    ),
)


def record_predictions(
    probabilities: np.ndarray, labels: list[str], attributes: Mapping[str, str]
) -> None:
    """Confidence and predicted label of every row of one batch's class probabilities; a row
    with a NaN or infinite probability predicts nothing (argmax would call NaN class 0)."""
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels) or not len(probabilities):
        return
    if not np.isfinite(probabilities).all():
        probabilities = probabilities[np.isfinite(probabilities).all(axis=1)]
    best = probabilities.max(axis=1)
    for value in best.tolist():
        confidence.record(value, attributes)
    counts = np.bincount(probabilities.argmax(axis=1), minlength=len(labels))
    series = tuple(attributes.items())
    for index in np.flatnonzero(counts).tolist():
        _predicted[series, labels[index]] += int(counts[index])


@functools.cache
def request_attributes(name: str, version: str, status: str) -> Mapping[str, str]:
    """The attributes of one request's metrics, built once per (bounded) combination."""
    return MappingProxyType({MODEL_NAME: name, MODEL_VERSION: version, STATUS: status})


@functools.cache
def model_attributes(name: str) -> Mapping[str, str]:
    """The attributes of per-model metrics (in-flight requests), built once per model."""
    return MappingProxyType({MODEL_NAME: name})


# Ground truth (docs/feedback.md): quality over each version's window, read at collection from
# the reports the feedback hub refreshes on the event loop; nothing here runs per inference.
CLASS = "class"
CORRECT = "inferwatch.feedback.correct"
"""Attribute of the feedback span's link to a prediction's span: whether it was right."""
#: Seconds from a prediction to its true label.
LABEL_DELAY_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600, 86400)

feedback_items = _meter.create_counter(
    "inferwatch.feedback.items",
    unit="{item}",
    description="Feedback items answered, by model and result (ok or why not).",
)
label_delay = _meter.create_histogram(
    "inferwatch.feedback.label.delay",
    unit="s",
    description="Time from a prediction to its true label, per accepted label.",
    explicit_bucket_boundaries_advisory=LABEL_DELAY_BUCKETS,
)


class FeedbackSource(Protocol):
    """Something that can report each version's quality and the prediction store's losses."""

    @property
    def stored(self) -> int:
        """Predictions kept for their labels now."""

    def quality_reports(self) -> Iterable[tuple[Mapping[str, str], QualityReport]]:
        """(attributes, latest quality report) per version that keeps predictions."""

    def dropped_counts(self) -> Iterable[tuple[Mapping[str, str], int]]:
        """(attributes with the reason, predictions dropped without a label) since the start."""


_feedback_sources: "weakref.WeakSet[FeedbackSource]" = weakref.WeakSet()


def observe_feedback(source: FeedbackSource) -> None:
    """Report this source's quality and store metrics from now on."""
    _feedback_sources.add(source)


def forget_feedback(source: FeedbackSource) -> None:
    """Stop reporting a source (its server stopped)."""
    _feedback_sources.discard(source)


def _quality_gauge(
    name: str,
    unit: str,
    description: str,
    values: Callable[[QualityReport, Mapping[str, str]], Iterable[tuple[float, Mapping[str, str]]]],
) -> None:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        for source in list(_feedback_sources):
            for attributes, report in source.quality_reports():
                yield from _observations(values(report, attributes))

    _meter.create_observable_gauge(name, callbacks=[callback], unit=unit, description=description)


_quality_gauge(
    "inferwatch.feedback.accuracy",
    "1",
    "Share of the labels that arrived in the window equal to their prediction.",
    lambda report, attributes: [(report.accuracy, attributes)],
)
_quality_gauge(
    "inferwatch.feedback.macro_f1",
    "1",
    "Macro F1 over the labels that arrived in the window (classes seen as true or predicted).",
    lambda report, attributes: [(report.macro_f1, attributes)],
)
_quality_gauge(
    "inferwatch.feedback.recall",
    "1",
    "Per-class recall over the labels that arrived in the window.",
    lambda report, attributes: [
        (recall, {**attributes, CLASS: label})
        for label, recall in zip(report.labels, report.recall, strict=True)
    ],
)
_quality_gauge(
    "inferwatch.feedback.labelled",
    "1",
    "Share of the predictions made in the window that have received a true label.",
    lambda report, attributes: [(report.labelled_share, attributes)],
)
_quality_gauge(
    "inferwatch.feedback.window.labels",
    "{label}",
    "True labels that arrived in the window: the sample size behind accuracy and F1.",
    lambda report, attributes: [(report.labelled, attributes)],
)


def _dropped(_: CallbackOptions) -> Iterable[Observation]:
    for source in list(_feedback_sources):
        for attributes, count in source.dropped_counts():
            yield Observation(count, dict(attributes))


def _stored(_: CallbackOptions) -> Iterable[Observation]:
    for source in list(_feedback_sources):
        yield Observation(source.stored)


_meter.create_observable_counter(
    "inferwatch.feedback.store.dropped",
    callbacks=[_dropped],
    unit="{prediction}",
    description="Predictions that left the prediction store without a true label, by reason.",
)
_meter.create_observable_gauge(
    "inferwatch.feedback.store.predictions",
    callbacks=[_stored],
    unit="{prediction}",
    description="Predictions kept for their true labels.",
)


@functools.cache
def version_attributes(name: str, version: str) -> Mapping[str, str]:
    """The attributes of per-version metrics, built once per version."""
    return MappingProxyType({MODEL_NAME: name, MODEL_VERSION: version})


@functools.cache
def feedback_attributes(name: str, result: str) -> Mapping[str, str]:
    """The attributes of the feedback item counter, built once per model and result."""
    return MappingProxyType({MODEL_NAME: name, RESULT: result})


@functools.cache
def dropped_attributes(name: str, version: str, reason: str) -> Mapping[str, str]:
    """The attributes of the dropped-predictions counter, built once per combination."""
    return MappingProxyType({MODEL_NAME: name, MODEL_VERSION: version, REASON: reason})
