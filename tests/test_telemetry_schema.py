"""docs/telemetry.md and what the model server really emits must agree, both ways."""

import json
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import Serve
from tests.model_server.protocol import pixels_request, probe_request
from tests.model_server.server_process import ServerProcess
from tests.model_server.test_models import probe_config, write_probe
from tests.telemetry_capture import TelemetryCapture

DOC = Path(__file__).parents[1] / "docs" / "telemetry.md"
SCOPE_LABELS = {"otel_scope_name", "otel_scope_version"}
GPU_ON = "GPU metrics for"  # logged by otel.system_metrics when NVML finds devices


def _table(section: str) -> list[dict[str, str]]:
    """Rows of the first table under `## <section>`, keyed by header, backticks removed."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(
            zip(
                header,
                (c.strip().replace("`", "") for c in line.strip("|").split("|")),
                strict=True,
            )
        )
        for line in lines[2:]
    ]


def _attributes(row: dict[str, str]) -> set[str]:
    return {name.strip() for name in row["attributes"].split(",") if name.strip()}


def _traffic(address: str) -> None:
    """Every kind of call: success, client error, unknown model, a rejection, metadata."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(pixels_request(np.zeros((4, 64))))
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


@pytest.fixture
def repository_with_slow_model(repository: Path) -> Path:
    write_probe(repository / "slow" / "1", probe_config(delay_ms=300, queue_size=1))
    return repository


def test_metrics_endpoint_matches_the_documented_metrics(
    repository_with_slow_model: Path, tmp_path: Path
) -> None:
    process = ServerProcess(
        tmp_path, "--grpc-port", "0", "--model-repository", str(repository_with_slow_model)
    )
    try:
        _traffic(process.wait_ready())
        url = f"http://127.0.0.1:{process.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
    finally:
        process.kill()

    emitted: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "target_info":
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels}
        scopes = {sample.labels.get("otel_scope_name", "") for sample in family.samples}
        assert len(scopes) == 1, name
        emitted[name] = (scopes.pop(), labels - SCOPE_LABELS - {"le"})
    gpu = any(GPU_ON in line for line in process.log)
    documented = {
        row["Prometheus name"]: (row["scope"], {a.replace(".", "_") for a in _attributes(row)})
        for row in _table("Metrics")
        if gpu or row["when"] != "GPU"
    }
    assert sorted(set(emitted) - set(documented)) == [], "emitted but not in docs/telemetry.md"
    assert sorted(set(documented) - set(emitted)) == [], "documented but not emitted"
    for name, (scope, labels) in documented.items():
        assert emitted[name] == (scope, labels), name

    documented_fields = {row["field"] for row in _table("Log fields")}
    for line in process.log:
        if line.startswith("{"):
            assert set(json.loads(line)) <= documented_fields, line


def test_metric_names_and_attributes_match_the_documented_otel_names(
    repository_with_slow_model: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    _traffic(serve(repository_with_slow_model).address)
    data = telemetry.metrics.get_metrics_data()
    assert data is not None
    emitted: dict[str, set[str]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != "model_server":
                continue
            for metric in scope_metrics.metrics:
                keys = emitted.setdefault(metric.name, set())
                for point in metric.data.data_points:
                    keys.update(point.attributes or {})
    documented = {
        row["OTel name"]: _attributes(row)
        for row in _table("Metrics")
        if row["scope"] == "model_server"
    }
    assert emitted == documented


def test_spans_match_the_documented_spans(
    repository_with_slow_model: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    _traffic(serve(repository_with_slow_model).address)
    emitted: dict[str, set[str]] = {}
    for span in telemetry.finished_spans():
        emitted.setdefault(span.name, set()).update(span.attributes or {})
    documented = {row["name"]: _attributes(row) for row in _table("Spans")}
    assert emitted == documented
