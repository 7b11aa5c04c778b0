"""A real Prometheus running the shipped rules and configuration against a real model server and
gateway under traffic with injected faults (see live_stack.py for what is adapted and why)."""

import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitoring.alerts.rules import ACCURACY_FLOOR, MIN_WINDOW_LABELS, RULES
from monitoring.alerts.webhook import WebhookServer
from monitoring.dashboards.__main__ import DASHBOARDS
from tests.conftest import wait_until
from tests.gateway.servers import GatewayProcess
from tests.model_server.server_process import ServerProcess
from tests.monitoring.stack import provisioning
from tests.monitoring.stack.alertmanager import Alertmanager
from tests.monitoring.stack.live_stack import (
    FAULTED_MODELS,
    UNLOADABLE,
    LiveStack,
    alertmanager_config,
    compressed_rules,
    model_repository,
    prometheus_config,
)
from tests.monitoring.stack.paths import STACK_DOC, TELEMETRY_DOC
from tests.monitoring.stack.promql_names import documented_metrics, metric_names
from tests.monitoring.stack.traffic import DELAY, ERROR, Traffic
from tests.otel.support import free_port
from tests.prometheus import START_TIMEOUT_S, Prometheus

pytestmark = pytest.mark.timeout(300)

EXPECTED = {
    ("InferWatchHighLatency", "slow"),
    ("InferWatchHighErrorRatio", "failing"),
    ("InferWatchDataDrift", "shifted"),
    ("InferWatchPredictionDrift", "shifted"),
    ("InferWatchQueueRejections", "crowded"),
    ("InferWatchModelNotReady", UNLOADABLE),
    ("InferWatchTelemetryDrops", "inferwatch-gateway"),
    ("InferWatchTargetDown", "otel-collector"),
    ("InferWatchAccuracyBelowFloor", "mislabelled"),
    ("InferWatchLowConfidence", "hesitant"),
}
"""(alert, subject) pairs that must fire: each fault, where it was injected."""
HEALTHY = {"digits", "inferwatch-model-server", "prometheus"}
"""Subjects with no fault: no alert may fire for them."""
KNOWN = documented_metrics(TELEMETRY_DOC, STACK_DOC)
WAIT_S = 150


def _subject(alert: dict[str, Any]) -> str:
    labels = alert["labels"]
    return str(labels.get("model_name") or labels.get("job"))


def _firing(prometheus: Prometheus) -> set[tuple[str, str]]:
    answer = prometheus.get("/api/v1/alerts") or {"data": {"alerts": []}}
    return {
        (a["labels"]["alertname"], _subject(a))
        for a in answer["data"]["alerts"]
        if a["state"] == "firing"
    }


def _labels(prometheus: Prometheus) -> dict[str, float]:
    """True labels in each model's quality window."""
    return {
        series["metric"]["model_name"]: float(series["value"][1])
        for series in _query(prometheus, "inferwatch_feedback_window_labels")
    }


def _query(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    answer = prometheus.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert answer is not None, expr
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _dashboard_query(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*")


@pytest.fixture(scope="module")
def stack(
    prometheus_server: str,
    alertmanager_binary: str,
    digits_version_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveStack]:
    work = tmp_path_factory.mktemp("live-stack")
    repository = model_repository(work / "models", digits_version_dir)
    server = ServerProcess(
        work,
        "--grpc-port",
        "0",
        "--model-repository",
        str(repository),
        env={"MODEL_SERVER_FAULT_INJECTION": "true", "MODEL_SERVER_DRIFT_INTERVAL_S": "1"},
    )
    webhook = WebhookServer("127.0.0.1", 0)
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    started: list[Any] = []
    traffic: Traffic | None = None
    try:
        address = server.wait_ready()
        # The gateway's OTLP endpoint is a closed port: its spans and log records are dropped.
        gateway = GatewayProcess(
            work,
            "--backend",
            address,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_BSP_MAX_QUEUE_SIZE": "8",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4",
            },
        )
        started.append(gateway)
        gateway.wait_ready()
        wait_until(lambda: bool(gateway.url and gateway.metrics_port))  # both are logged
        gateway_url = gateway.url
        webhook_url = f"http://127.0.0.1:{webhook.server_address[1]}/alertmanager"
        alertmanager = Alertmanager(alertmanager_binary, work, alertmanager_config(webhook_url))
        started.append(alertmanager)
        alertmanager.wait_ready(START_TIMEOUT_S)
        prometheus_port = free_port()
        config = prometheus_config(
            {
                "inferwatch-model-server": server.metrics_port,
                "inferwatch-gateway": gateway.metrics_port,
                "prometheus": prometheus_port,
            },
            compressed_rules(work / "rules.yml"),
            alertmanager.port,
        )
        prometheus = Prometheus(prometheus_server, work, config=config, port=prometheus_port)
        started.append(prometheus)
        prometheus.poll("/-/ready", lambda status: status == 200, START_TIMEOUT_S)

        traffic = Traffic(address, gateway_url)
        traffic.start(traffic.rest("digits", labelled=True), 0.1)
        traffic.start(traffic.grpc("digits"), 0.2)
        traffic.start(traffic.grpc("slow", parameters={DELAY: 400}), 0.05)
        traffic.start(traffic.grpc("failing", parameters={ERROR: True}), 0.1)
        traffic.start(traffic.grpc("shifted", invert=True), 0.1)
        traffic.start(traffic.burst("crowded", 4), 0.3)
        traffic.start(traffic.labelled("mislabelled"), 0.1)
        traffic.start(traffic.grpc("hesitant"), 0.1)
        try:
            prometheus.poll("/api/v1/alerts", lambda _: _firing(prometheus) >= EXPECTED, WAIT_S)
        except AssertionError:
            missing = EXPECTED - _firing(prometheus)
            raise AssertionError(f"not firing: {missing}") from None
        yield LiveStack(prometheus=prometheus, webhook=webhook, model_server=server)
    finally:
        if traffic is not None:
            traffic.stop()
        for part in reversed(started):
            part.kill() if isinstance(part, GatewayProcess) else part.stop()
        webhook.shutdown()
        webhook.server_close()
        server.kill()


def test_each_fault_fires_its_alert_and_healthy_subjects_stay_quiet(stack: LiveStack) -> None:
    ready = {
        series["metric"]["model_name"]: series["value"][1]
        for series in _query(stack.prometheus, "inferwatch_model_ready")
    }
    assert ready == {**dict.fromkeys(("digits", *FAULTED_MODELS), "1"), UNLOADABLE: "0"}
    firing = _firing(stack.prometheus)
    assert firing >= EXPECTED
    # digits is quiet on its accuracy, not for want of labels: enough came, and they agree
    stack.prometheus.poll(
        "/api/v1/query?query=inferwatch_feedback_window_labels",
        lambda _: _labels(stack.prometheus).get("digits", 0) >= MIN_WINDOW_LABELS,
        WAIT_S,
    )
    accuracy = _query(stack.prometheus, 'inferwatch_feedback_accuracy_ratio{model_name="digits"}')
    assert float(accuracy[0]["value"][1]) > ACCURACY_FLOOR
    firing = _firing(stack.prometheus)
    assert {(name, subject) for name, subject in firing if subject in HEALTHY} == set()
    assert {name for name, _ in firing} <= {rule.name for rule in RULES}


def test_alertmanager_routes_them_to_the_webhook(stack: LiveStack) -> None:
    wanted = {"InferWatchHighLatency", "InferWatchHighErrorRatio", "InferWatchDataDrift"}

    def delivered(alerts: list[tuple[str, dict[str, Any]]]) -> bool:
        return wanted <= {a["labels"]["alertname"] for _, a in alerts if a["status"] == "firing"}

    assert stack.webhook.notifications.wait_for(delivered, 60)
    for path, alert in stack.webhook.notifications.snapshot():
        assert path == "/alertmanager"
        assert alert["annotations"]["runbook_url"].startswith("docs/runbooks.md#")
        assert "%7B%7B" not in alert["annotations"]["logs_url"]  # templates were rendered
        assert _subject(alert) in alert["annotations"]["logs_url"]


def test_every_alert_query_evaluates_and_returns_data(stack: LiveStack) -> None:
    for rule in RULES:
        assert _query(stack.prometheus, rule.value), rule.name
        _query(stack.prometheus, rule.expr)


def test_every_dashboard_query_evaluates_and_ours_return_data(stack: LiveStack) -> None:
    """Queries on our services' metrics must return data; those on the Collector's metrics or
    GPU metrics (nothing here emits them) must still evaluate without error."""
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels():
            for query in panel.queries:
                expr = _dashboard_query(query.expr)
                result = _query(stack.prometheus, expr)
                origins = {KNOWN[name] for name in metric_names(query.expr)}
                if origins == {"telemetry"}:
                    assert result, f"{dashboard.uid} / {panel.title}: no data for {expr}"


def test_tempo_to_metrics_queries_return_data_for_each_service(stack: LiveStack) -> None:
    queries = provisioning.datasources()["tempo"]["jsonData"]["tracesToMetrics"]["queries"]
    jobs = {"inferwatch_server_": "inferwatch-model-server", "http_server_": "inferwatch-gateway"}
    for query in queries:
        job = next(job for prefix, job in jobs.items() if prefix in query["query"])
        expr = query["query"].replace("${__tags}", f'job="{job}"')
        assert _query(stack.prometheus, expr), expr


def test_exemplars_carry_the_label_grafana_links_to_tempo(stack: LiveStack) -> None:
    destinations = provisioning.datasources()["prometheus"]["jsonData"]
    names = {d["name"] for d in destinations["exemplarTraceIdDestinations"]}
    query = urllib.parse.urlencode(
        {"query": "inferwatch_server_request_duration_seconds_bucket", "start": "0", "end": "4e9"}
    )
    answer = stack.prometheus.get("/api/v1/query_exemplars?" + query)
    assert answer is not None
    exemplars = [e for series in answer["data"] for e in series["exemplars"]]
    assert exemplars
    for exemplar in exemplars:
        assert set(exemplar["labels"]) & names
        assert re.fullmatch(r"[0-9a-f]{32}", exemplar["labels"]["trace_id"])
