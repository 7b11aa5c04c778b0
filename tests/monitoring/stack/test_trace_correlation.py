"""The trace-id correlations (Loki <-> Tempo, alert links) against what the services really
send: a real model server and gateway export OTLP to a test receiver; their log records are
mapped the way Loki stores OTLP logs, using the shipped loki.yaml."""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from monitoring.alerts.rules import RULES
from otel.logs import install_otlp_handler, remove_log_handlers
from tests.conftest import wait_until
from tests.gateway.servers import GatewayProcess
from tests.model_server.server_process import ServerProcess
from tests.monitoring.stack import provisioning
from tests.monitoring.stack.loki_otlp import to_loki
from tests.monitoring.stack.paths import LOKI_CONFIG
from tests.otel.otlp_receiver import OtlpGrpcReceiver, Received, attributes

ROW = [0.0] * 64


@pytest.fixture(scope="module")
def exported(
    digits_version_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Received, str]]:
    """Everything a model server and a gateway export for one REST inference; its trace id."""
    work = tmp_path_factory.mktemp("correlation")
    repository = work / "models" / "digits"
    repository.mkdir(parents=True)
    (repository / "1").symlink_to(digits_version_dir, target_is_directory=True)
    receiver = OtlpGrpcReceiver()
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    otlp["OTEL_BLRP_SCHEDULE_DELAY"] = "100"
    server = ServerProcess(
        work, "--model-repository", str(work / "models"), "--grpc-port", "0", env=otlp
    )
    gateway: GatewayProcess | None = None
    try:
        address = server.wait_ready()
        gateway = GatewayProcess(
            work, "--backend", address, env={**otlp, "GATEWAY_ACCESS_LOG": "true"}
        )
        gateway.wait_ready()
        wait_until(lambda: bool(gateway and gateway.url))
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
        answer = httpx.post(f"{gateway.url}/v2/models/digits/infer", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        trace_id = answer.headers["x-trace-id"]

        def complete(received: Received) -> bool:
            logs = [r for _, r in received.log_records() if r.trace_id.hex() == trace_id]
            services = {
                res["service.name"] for res, s in received.spans() if s.trace_id.hex() == trace_id
            }
            return bool(logs) and services == {"inferwatch-gateway", "inferwatch-model-server"}

        receiver.received.wait_for(complete, timeout_s=30)
        yield receiver.received, trace_id
    finally:
        if gateway is not None:
            gateway.kill()
        server.kill()
        receiver.stop()


def _otlp_config() -> dict[str, Any]:
    otlp_config: dict[str, Any] = yaml.safe_load(LOKI_CONFIG.read_text())["limits_config"][
        "otlp_config"
    ]
    return otlp_config


def _log_in_trace(received: Received, trace_id: str) -> tuple[dict[str, str], dict[str, str], str]:
    resource, record = next(
        (res, r) for res, r in received.log_records() if r.trace_id.hex() == trace_id
    )
    return to_loki(resource, record, _otlp_config())


def test_a_log_line_carries_its_trace_id_where_grafana_looks_for_it(
    exported: tuple[Received, str],
) -> None:
    received, trace_id = exported
    labels, metadata, _ = _log_in_trace(received, trace_id)
    [field] = provisioning.datasources()["loki"]["jsonData"]["derivedFields"]
    assert field["matcherType"] == "label"  # structured metadata is a label to Grafana
    assert metadata[field["matcherRegex"]] == trace_id
    assert field["datasourceUid"] == "tempo"
    assert field["url"] == "${__value.raw}"
    assert "trace_id" not in labels


def test_a_trace_finds_its_log_lines_in_loki(exported: tuple[Received, str]) -> None:
    """Grafana's Tempo -> Loki query, filled in for the gateway's HTTP server span."""
    received, trace_id = exported
    span_resource, _ = next(
        (res, s)
        for res, s in received.spans()
        if s.trace_id.hex() == trace_id and not s.parent_span_id
    )
    settings = provisioning.datasources()["tempo"]["jsonData"]["tracesToLogsV2"]
    tags = ", ".join(f'{t["value"]}="{span_resource[t["key"]]}"' for t in settings["tags"])
    query = settings["query"].replace("${__tags}", tags).replace("${__span.traceId}", trace_id)
    labels, metadata, _ = _log_in_trace(received, trace_id)
    selector, line_filter = query.split(" | ")
    assert selector == "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items() if k in tags) + "}"
    assert line_filter == f'trace_id="{metadata["trace_id"]}"'


def test_service_instance_id_is_not_an_index_label(exported: tuple[Received, str]) -> None:
    received, trace_id = exported
    labels, metadata, _ = _log_in_trace(received, trace_id)
    assert labels["service_name"] == "inferwatch-gateway"
    assert "service_instance_id" not in labels
    assert metadata["service_instance_id"]
    # without the shipped override, Loki's defaults would index it
    resource, record = next(
        (res, r) for res, r in received.log_records() if r.trace_id.hex() == trace_id
    )
    assert "service_instance_id" in to_loki(resource, record, {})[0]


def test_alert_links_search_fields_the_services_emit(exported: tuple[Received, str]) -> None:
    received, trace_id = exported
    labels, metadata, _ = _log_in_trace(received, trace_id)
    spans = [(res, s) for res, s in received.spans() if s.trace_id.hex() == trace_id]
    span_attributes = {key for _, s in spans for key in attributes(s.attributes)}
    resource_attributes = {key for res, _ in spans for key in res}
    for rule in RULES:
        assert "service_name" in labels  # the stream selector's label
        assert "severity_text" in metadata  # the severity filter
        for condition in rule.traces.conditions:
            scope, _, name = condition.field.partition(".")
            if scope == "span":
                assert name in span_attributes, (rule.name, condition.field)
            elif scope == "resource":
                assert name in resource_attributes, (rule.name, condition.field)
            else:
                assert condition.field in {"status", "duration"}, condition.field  # intrinsics


def test_alert_log_searches_keep_severities_the_services_send() -> None:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = install_otlp_handler(provider)
    try:
        for level in (logging.WARNING, logging.ERROR, logging.CRITICAL):
            logging.getLogger("tests.severity").log(level, "a line at %s", level)
    finally:
        remove_log_handlers([handler])
    sent = {data.log_record.severity_text for data in exporter.get_finished_logs()}
    assert len(sent) == 3
    for rule in RULES:
        assert set(rule.logs.severities) <= sent, (rule.name, rule.logs.severities, sent)
