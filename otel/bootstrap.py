"""`setup_telemetry`: one call per process builds the resource, the providers and the exporters."""

import logging
import os
from collections.abc import Sequence
from typing import Final

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.environment_variables import OTEL_METRICS_EXEMPLAR_FILTER
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, Histogram
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from otel import otlp
from otel.exemplars import bucket_exemplar_reservoirs
from otel.histogram import LeanMeterProvider
from otel.logs import install_otlp_handler, install_stdout_handler, remove_log_handlers
from otel.metric_export import PeriodicExport, shares_aggregation
from otel.prometheus import MetricsServer, PrometheusReader
from otel.selfmetrics import (
    CountingLogExporter,
    CountingMetricExporter,
    CountingSpanExporter,
    PipelineStats,
    count_queue_drops,
)
from otel.settings import TelemetrySettings
from otel.span_batching import GroupingBatchSpanProcessor
from otel.system_metrics import register_gpu_metrics, register_process_metrics
from otel.telemetry import Closable, SdkPipeline, Telemetry
from otel.tracing import LeanTracerProvider

logger = logging.getLogger(__name__)

DURATION_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Bucket bounds advised by every request-scale duration histogram (`s`): the SDK's default
bounds suit milliseconds."""

SELF_METER = "inferwatch.telemetry"
"""Meter (scope) of the pipeline's self-metrics and the process/GPU metrics."""


def build_resource(
    settings: TelemetrySettings, *, service_name: str, service_version: str
) -> Resource:
    """service.name, service.version, deployment.environment.name and one service.instance.id.

    `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` override any of them; without an override
    service.instance.id is the SDK's random per-process UUID.
    """
    ours = Resource.create(
        {
            "service.name": service_name,
            "service.version": service_version,
            "deployment.environment.name": settings.deployment_environment,
        }
    )
    return ours.merge(OTELResourceDetector().detect())


def setup_telemetry(
    settings: TelemetrySettings,
    *,
    service_name: str,
    service_version: str,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    log_processors: Sequence[LogRecordProcessor] = (),
    install_globals: bool = True,
) -> Telemetry:
    """Builds this process's telemetry; call once, before serving.

    Always: JSON (or text) log lines on stdout and, unless disabled, a Prometheus `/metrics`
    endpoint. OTLP traces, metrics and logs when an OTLP endpoint is configured (`OTEL_*`).
    `install_globals` sets the global tracer, meter and logger providers that library code
    reaches through the OpenTelemetry API (the API accepts them once per process). Tests pass
    False and attach in-memory exporters or readers through the extra processors and readers.
    """
    resource = build_resource(settings, service_name=service_name, service_version=service_version)
    stdout_handler = install_stdout_handler(
        level=settings.log_level,
        json_lines=settings.json_logs,
        service_name=str(resource.attributes["service.name"]),
    )
    pipeline, otlp_handler = None, None
    if settings.telemetry_enabled:
        try:
            pipeline = _build_pipeline(
                settings, resource, span_processors, metric_readers, log_processors
            )
        except BaseException:
            remove_log_handlers([stdout_handler])
            raise
        if install_globals:
            trace.set_tracer_provider(pipeline.tracer_provider)
            metrics.set_meter_provider(pipeline.meter_provider)
            _logs.set_logger_provider(pipeline.logger_provider)
        if pipeline.ships_logs:
            otlp_handler = install_otlp_handler(pipeline.logger_provider)
    return Telemetry(
        resource=resource,
        pipeline=pipeline,
        stdout_handler=stdout_handler,
        otlp_handler=otlp_handler,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )


def _build_pipeline(
    settings: TelemetrySettings,
    resource: Resource,
    span_processors: Sequence[SpanProcessor],
    metric_readers: Sequence[MetricReader],
    log_processors: Sequence[LogRecordProcessor],
) -> SdkPipeline:
    span_exporter, metric_exporter, log_exporter = (
        otlp.span_exporter(),
        otlp.metric_exporter(),
        otlp.log_exporter(),
    )
    # Recording spans nobody exports costs the request path for nothing: without a trace exporter
    # or processor spans are not recorded, but every request still gets a trace context (log
    # lines carry its trace_id), and exemplars are kept for every measurement so a slow bucket
    # still leads to that request's log lines.
    records_spans = span_exporter is not None or bool(span_processors)
    prometheus = PrometheusReader()
    server = MetricsServer(prometheus, settings.metrics_host, settings.metrics_port)
    stats = PipelineStats()
    exporters: list[Closable] = []

    readers = [prometheus, *metric_readers]
    metric_export = None
    if metric_exporter is not None:
        counted_metrics = CountingMetricExporter(metric_exporter, stats)
        exporters.append(counted_metrics)
        if shares_aggregation(counted_metrics):
            metric_export = PeriodicExport(prometheus, counted_metrics)
        else:
            readers.append(PeriodicExportingMetricReader(counted_metrics))
    # One View, for the exemplar reservoir only: it names no aggregation, so each histogram keeps
    # its explicit_bucket_boundaries_advisory (the label delay spans seconds to a day).
    meter_provider = LeanMeterProvider(
        metric_readers=readers,
        resource=resource,
        shutdown_on_exit=False,
        views=[
            View(instrument_type=Histogram, exemplar_reservoir_factory=bucket_exemplar_reservoirs)
        ],
        # None: the SDK's choice (OTEL_METRICS_EXEMPLAR_FILTER, by default trace-based).
        exemplar_filter=None
        if records_spans or OTEL_METRICS_EXEMPLAR_FILTER in os.environ
        else AlwaysOnExemplarFilter(),
    )
    meter = meter_provider.get_meter(SELF_METER)
    stats.register(meter)
    register_process_metrics(meter)
    register_gpu_metrics(meter)

    tracer_provider = LeanTracerProvider(
        resource=resource,
        shutdown_on_exit=False,
        sampler=None if records_spans else ALWAYS_OFF,  # None: the SDK reads OTEL_TRACES_SAMPLER
    )
    if not records_spans:
        logger.info("no trace exporter configured: spans are not recorded")
    if span_exporter is not None:
        counted_spans = CountingSpanExporter(span_exporter, stats)
        exporters.append(counted_spans)
        batch_spans = (
            GroupingBatchSpanProcessor(
                counted_spans, span_exporter.encoder, meter_provider=meter_provider
            )
            if settings.encode_spans_at_end and isinstance(span_exporter, otlp.LeanGrpcSpanExporter)
            else BatchSpanProcessor(counted_spans, meter_provider=meter_provider)
        )
        count_queue_drops(batch_spans, "traces", stats)
        tracer_provider.add_span_processor(batch_spans)
    for span_processor in span_processors:
        tracer_provider.add_span_processor(span_processor)

    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    if log_exporter is not None:
        counted_logs = CountingLogExporter(log_exporter, stats)
        exporters.append(counted_logs)
        batch_logs = BatchLogRecordProcessor(counted_logs, meter_provider=meter_provider)
        count_queue_drops(batch_logs, "logs", stats)
        logger_provider.add_log_record_processor(batch_logs)
    for log_processor in log_processors:
        logger_provider.add_log_record_processor(log_processor)

    return SdkPipeline(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        metrics_server=server,
        metric_export=metric_export,
        exporters=exporters,
        ships_logs=log_exporter is not None or bool(log_processors),
    )
