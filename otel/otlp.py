"""OTLP exporters, configured by the standard `OTEL_*` variables only.

A signal is exported when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`
is set and `OTEL_<SIGNAL>_EXPORTER` is not `none`. The protocol comes from
`OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or
`http/protobuf`. Everything else (headers, timeout in seconds, compression, certificates) is
read by the exporters themselves. Spans sent over gRPC are encoded by `otel.span_encoding`.
"""

import os
from collections.abc import Sequence

import grpc
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter

from otel.selfmetrics import Signal
from otel.span_encoding import SpanEncoder

_PROTOCOLS = ("grpc", "http/protobuf")
_TRACE_EXPORT = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].methods_by_name[
    "Export"
]
TRACE_EXPORT_PATH = f"/{_TRACE_EXPORT.containing_service.full_name}/{_TRACE_EXPORT.name}"
"""The gRPC method an OTLP trace export calls."""


class _EncodedTraceClient:
    """The trace service stub for a request already serialized: `Export` sends the bytes as
    they are and does not parse the (ignored) response."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(TRACE_EXPORT_PATH)


class LeanGrpcSpanExporter(GrpcSpanExporter):
    """The OTLP/gRPC span exporter with `SpanEncoder` in place of the SDK's per-object
    encoding, and the encoded request sent as it is (parsing it into a message for the stub
    to serialize again cost the export thread about 150 µs of GIL a 500-span batch).
    Transport, retries, headers, compression and TLS are the SDK exporter's."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SpanEncoder()

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        self._client = _EncodedTraceClient(self._channel)  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return self.encoder.encode(data)


def span_exporter() -> SpanExporter | None:
    """The configured OTLP span exporter, or None."""
    if not _enabled("traces"):
        return None
    return LeanGrpcSpanExporter() if _protocol("traces") == "grpc" else HttpSpanExporter()


def metric_exporter() -> MetricExporter | None:
    """The configured OTLP metric exporter, or None."""
    if not _enabled("metrics"):
        return None
    return GrpcMetricExporter() if _protocol("metrics") == "grpc" else HttpMetricExporter()


def log_exporter() -> LogRecordExporter | None:
    """The configured OTLP log record exporter, or None."""
    if not _enabled("logs"):
        return None
    return GrpcLogExporter() if _protocol("logs") == "grpc" else HttpLogExporter()


def _enabled(signal: Signal) -> bool:
    if os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _protocol(signal: Signal) -> str:
    name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    if not os.environ.get(name):
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = os.environ.get(name, "").strip().lower() or "grpc"
    if protocol not in _PROTOCOLS:
        raise ValueError(f"{name}={protocol!r} is not supported; use one of {_PROTOCOLS}")
    return protocol
