"""docs/telemetry.md and what the model server and the gateway really emit must agree, both
ways: on a real process's `/metrics` (and its log lines), and in-process by OTel name and span."""

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.proto import model_repository_pb2 as repo_pb
from model_server.proto import model_repository_pb2_grpc as repo_grpc
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc
from tests.conftest import Serve, wait_until
from tests.gateway.servers import GatewayProcess, GatewayThread, gateway_settings
from tests.model_server.protocol import pixels_request, probe_request
from tests.model_server.server_process import ServerProcess
from tests.model_server.test_models import probe_config, write_probe
from tests.telemetry_capture import TelemetryCapture

DOC = Path(__file__).parents[1] / "docs" / "telemetry.md"
SCOPE_LABELS = {"otel_scope_name", "otel_scope_version"}
GPU_ON = "GPU metrics for"  # logged by otel.system_metrics when NVML finds devices
MODEL_SERVER, GATEWAY = "model server", "gateway"
#: Log fields only some lines have (inside a span; with an exception; with `stack_info`).
CONDITIONAL_LOG_FIELDS = {"trace_id", "span_id", "exception", "stack"}


def _table(section: str, service: str | None = None) -> list[dict[str, str]]:
    """Rows of the first table under `## <section>`, keyed by header, backticks removed; with
    `service`, only its rows and those of `both`."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [
        dict(
            zip(
                header,
                (c.strip().replace("`", "") for c in line.strip("|").split("|")),
                strict=True,
            )
        )
        for line in lines[2:]
    ]
    return [row for row in rows if service is None or row["service"] in (service, "both")]


def _attributes(row: dict[str, str]) -> set[str]:
    return {name.strip() for name in row["attributes"].split(",") if name.strip()}


def _traffic(address: str) -> None:
    """Every kind of call: success, client error, unknown model, a rejection, metadata, drift,
    feedback (a label, and a prediction dropped unlabelled: its id reused), and the repository
    RPCs (the slow model is unloaded last)."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        pixels = digits.load_split().x_test[:160]
        for start in range(0, len(pixels), 32):  # enough rows for every drift statistic
            stub.ModelInfer(pixels_request(pixels[start : start + 32], request_id=f"r{start}"))
        stub.ModelInfer(pixels_request(pixels[:1], request_id="r0"))
        monitoring = mon_grpc.ModelMonitoringStub(channel)
        monitoring.ModelDrift(mon_pb.ModelDriftRequest(name="digits"))
        label = mon_pb.FeedbackItem(id="r0", label="0")
        monitoring.Feedback(mon_pb.FeedbackRequest(name="digits", items=[label]))
        stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"))
        stub.ServerMetadata(pb.ServerMetadataRequest())
        for bad in (pixels_request(np.zeros((1, 3))), probe_request(np.ones((1, 4)), "nope")):
            with pytest.raises(grpc.RpcError):
                stub.ModelInfer(bad)
        # The slow model queues one request; the next ones are rejected (queue_full).
        calls = [stub.ModelInfer.future(probe_request(np.ones((1, 4)), "slow")) for _ in "abc"]
        codes = set()
        for call in calls:
            try:
                call.result(timeout=10)
                codes.add(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.add(error.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        repository = repo_grpc.ModelRepositoryServiceStub(channel)
        assert repository.RepositoryIndex(repo_pb.RepositoryIndexRequest()).models
        repository.RepositoryModelLoad(repo_pb.RepositoryModelLoadRequest(model_name="digits"))
        repository.RepositoryModelUnload(repo_pb.RepositoryModelUnloadRequest(model_name="slow"))


@pytest.fixture
def repository_with_slow_model(repository: Path) -> Path:
    write_probe(repository / "slow" / "1", probe_config(delay_ms=300, queue_size=1))
    return repository


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: str = response.read().decode()
    return body


def _assert_scrape_is_documented(body: str, log: list[str], service: str) -> None:
    """Both ways: every family in the scrape is a documented row of `service` (scope and
    attributes too), every row is in the scrape; every JSON log line has documented keys and
    every key all lines have, and some line logged in a span carries its trace."""
    emitted: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "target_info":
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels}
        scopes = {sample.labels.get("otel_scope_name", "") for sample in family.samples}
        assert len(scopes) == 1, name
        emitted[name] = (scopes.pop(), labels - SCOPE_LABELS - {"le"})
    gpu = any(GPU_ON in line for line in log)
    documented = {
        row["Prometheus name"]: (row["scope"], {a.replace(".", "_") for a in _attributes(row)})
        for row in _table("Metrics", service)
        if gpu or row["when"] != "GPU"
    }
    assert sorted(set(emitted) - set(documented)) == [], "emitted but not in docs/telemetry.md"
    assert sorted(set(documented) - set(emitted)) == [], "documented but not emitted"
    for name, (scope, labels) in documented.items():
        assert emitted[name] == (scope, labels), name

    documented_fields = {row["field"] for row in _table("Log fields")}
    always = documented_fields - CONDITIONAL_LOG_FIELDS
    json_lines = [line for line in log if line.startswith("{")]
    assert json_lines
    for line in json_lines:
        fields = set(json.loads(line))
        assert always <= fields <= documented_fields, line
    in_span = [line for line in json_lines if {"trace_id", "span_id"} <= set(json.loads(line))]
    assert in_span, "no log line carried the trace of the span it was logged in"


def _otel_metrics(telemetry: TelemetryCapture, scope: str) -> dict[str, set[str]]:
    """OTel metric name -> every attribute key recorded under this instrumentation scope."""
    data = telemetry.metrics.get_metrics_data()
    assert data is not None
    emitted: dict[str, set[str]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != scope:
                continue
            for metric in scope_metrics.metrics:
                keys = emitted.setdefault(metric.name, set())
                for point in metric.data.data_points:
                    keys.update(point.attributes or {})
    return emitted


def test_metrics_endpoint_matches_the_documented_metrics(
    repository_with_slow_model: Path, tmp_path: Path
) -> None:
    process = ServerProcess(
        tmp_path, "--grpc-port", "0", "--model-repository", str(repository_with_slow_model)
    )
    try:
        _traffic(process.wait_ready())
        body = _scrape(process.metrics_port)
    finally:
        process.kill()
    _assert_scrape_is_documented(body, process.log, MODEL_SERVER)


def test_metric_names_and_attributes_match_the_documented_otel_names(
    repository_with_slow_model: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    _traffic(serve(repository_with_slow_model).address)
    documented = {
        row["OTel name"]: _attributes(row)
        for row in _table("Metrics", MODEL_SERVER)
        if row["scope"] == "model_server"
    }
    assert _otel_metrics(telemetry, "model_server") == documented


def test_spans_match_the_documented_spans(
    repository_with_slow_model: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    _traffic(serve(repository_with_slow_model).address)
    emitted: dict[str, set[str]] = {}
    for span in telemetry.finished_spans():
        emitted.setdefault(span.name, set()).update(span.attributes or {})
    documented = {row["name"]: _attributes(row) for row in _table("Spans", MODEL_SERVER)}
    assert emitted == documented


def _gateway_traffic(url: str) -> None:
    """Every kind of REST call: inference (also of a pinned version), metadata, drift, feedback,
    health, a client mistake, an unknown model, an unknown route, and a timeout (a 5xx)."""
    pixels = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
    with httpx.Client(base_url=url, timeout=30) as http:
        expected = {
            "/v2/models/digits/infer": 200,
            "/v2/models/digits/versions/1/infer": 200,
            "/v2/models/nope/infer": 404,
        }
        for path, status in expected.items():
            assert http.post(path, json={"inputs": [pixels]}).status_code == status
        assert http.post("/v2/models/digits/infer", json={"inputs": []}).status_code == 400
        label = {"items": [{"id": "some-id", "label": "0"}]}
        assert http.post("/v2/models/digits/versions/1/feedback", json=label).status_code == 200
        for path in (
            "/v2/models/digits",
            "/v2/models/digits/versions/1",
            "/v2/models/digits/drift",
        ):
            assert http.get(path).status_code == 200
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/digits/ready"):
            assert http.get(path).status_code == 200
        assert http.get("/no/such/route").status_code == 404
        late = http.post(
            "/v2/models/slow/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]},
            headers={"x-request-timeout": "0.05"},
        )
        assert late.status_code == 504


def test_gateway_metrics_endpoint_matches_the_documented_metrics(
    repository_with_slow_model: Path, serve: Serve, tmp_path: Path
) -> None:
    server = serve(repository_with_slow_model)
    # With its access log: one line logged inside each request's span.
    process = GatewayProcess(
        tmp_path, "--backend", server.address, env={"GATEWAY_ACCESS_LOG": "true"}
    )
    try:
        _gateway_traffic(process.wait_ready())
        body = _scrape(process.metrics_port)
    finally:
        process.kill()
    _assert_scrape_is_documented(body, process.log, GATEWAY)


@pytest.fixture
def gateway(repository_with_slow_model: Path, serve: Serve) -> Iterator[GatewayThread]:
    """An in-process gateway in front of an in-process model server with the slow model."""
    gateway = GatewayThread(gateway_settings([serve(repository_with_slow_model).address]))
    yield gateway
    gateway.stop()


def test_gateway_metric_names_and_attributes_match_the_documented_otel_names(
    gateway: GatewayThread, telemetry: TelemetryCapture
) -> None:
    _gateway_traffic(gateway.url)
    documented = {
        row["OTel name"]: _attributes(row)
        for row in _table("Metrics", GATEWAY)
        if row["scope"] == "gateway"
    }
    assert _otel_metrics(telemetry, "gateway") == documented


def test_gateway_spans_match_the_documented_spans(
    gateway: GatewayThread, telemetry: TelemetryCapture
) -> None:
    rows = _table("Spans", GATEWAY)
    documented = {row["name"]: _attributes(row) for row in rows}
    [http_row] = [row["name"] for row in rows if row["kind"] == "server"]

    def row_of(span: ReadableSpan) -> str:
        """The documented name; a server span's name is checked against its naming rule."""
        if span.kind is not SpanKind.SERVER:
            return span.name
        attributes = span.attributes or {}
        method, route = str(attributes["http.request.method"]), attributes.get("http.route")
        assert span.name == (method if route is None else f"{method} {route!s}")
        return http_row

    def timed_out() -> bool:
        return any(
            (span.attributes or {}).get("http.response.status_code") == 504
            for span in telemetry.finished_spans()
        )

    _gateway_traffic(gateway.url)
    wait_until(timed_out)  # the last request's span ends just after its answer
    emitted: dict[str, set[str]] = {}
    for span in telemetry.finished_spans():
        if span.instrumentation_scope is not None and span.instrumentation_scope.name == "gateway":
            emitted.setdefault(row_of(span), set()).update(span.attributes or {})
    assert emitted == documented
