"""Real OTLP receivers for tests: gRPC (the official collector service definitions) and
HTTP/protobuf. Both listen on 127.0.0.1:0 and store every export request they receive.

    receiver = OtlpGrpcReceiver()            # or OtlpHttpReceiver(); delay_s= slows handlers
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    ...
    receiver.received.wait_for(lambda r: r.spans(), timeout_s=10)
    receiver.stop()
"""

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

Attributes = dict[str, Any]


def attributes(pairs: Iterator[KeyValue] | Any) -> Attributes:
    """OTLP key-values as a dict (scalars and lists of scalars)."""
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


class Received:
    """Export requests received so far, by signal; thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []

    def add(self, request: Message) -> None:
        with self._changed:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.trace_requests.append(request)
            elif isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                self.metric_requests.append(request)
            else:
                assert isinstance(request, logs_service_pb2.ExportLogsServiceRequest)
                self.log_requests.append(request)
            self._changed.notify_all()

    def wait_for(self, condition: Callable[["Received"], object], timeout_s: float = 10) -> None:
        """Blocks until `condition(self)` is truthy; AssertionError after `timeout_s`."""
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self), timeout_s):
                raise AssertionError(f"OTLP receiver: condition not met within {timeout_s} s")

    def spans(self) -> list[tuple[Attributes, Span]]:
        """(resource attributes, span) for every span received."""
        return [
            (attributes(resource_spans.resource.attributes), span)
            for request in list(self.trace_requests)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def metrics(self) -> list[tuple[Attributes, Metric]]:
        """(resource attributes, metric) for every metric received."""
        return [
            (attributes(resource_metrics.resource.attributes), metric)
            for request in list(self.metric_requests)
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        ]

    def log_records(self) -> list[tuple[Attributes, LogRecord]]:
        """(resource attributes, log record) for every log record received."""
        return [
            (attributes(resource_logs.resource.attributes), record)
            for request in list(self.log_requests)
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]


class OtlpGrpcReceiver:
    """OTLP/gRPC trace, metrics and logs services; each call waits `delay_s` before answering."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.received = Received()
        self._delay_s = delay_s
        self._stopping = threading.Event()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp"))
        # The generated *_pb2_grpc modules carry no annotations, hence the ignores.
        server = self._server
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self), server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsService(self), server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _LogsService(self), server
        )
        self.port: int = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        """Value for OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def store(self, request: Message) -> None:
        """Called by the services: waits the delay (cut short by `stop`), then stores."""
        self._stopping.wait(self._delay_s)
        self.received.add(request)

    def stop(self) -> None:
        """Stops at once; calls in progress are cancelled."""
        self._stopping.set()
        self._server.stop(grace=None).wait()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 (generated service method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.store(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 (generated service method name)
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver.store(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 (generated service method name)
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self._receiver.store(request)
        return logs_service_pb2.ExportLogsServiceResponse()


_HTTP_PATHS: dict[str, tuple[type[Message], type[Message]]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


class OtlpHttpReceiver:
    """OTLP/HTTP with binary protobuf bodies (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`)."""

    def __init__(self) -> None:
        self.received = Received()
        self._server = _HttpServer(self.received)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """Value for OTEL_EXPORTER_OTLP_ENDPOINT (the exporters append `/v1/<signal>`)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _HttpServer(ThreadingHTTPServer):
    def __init__(self, received: Received) -> None:
        self.received = received
        super().__init__(("127.0.0.1", 0), _HttpHandler)


class _HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        assert isinstance(self.server, _HttpServer)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path not in _HTTP_PATHS:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        request_type, response_type = _HTTP_PATHS[self.path]
        request = request_type()
        request.ParseFromString(body)
        self.server.received.add(request)
        response = response_type().SerializeToString()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged."""
