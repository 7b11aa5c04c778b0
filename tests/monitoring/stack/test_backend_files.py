"""Collector, Prometheus, Alertmanager, Tempo and Loki files. Prometheus' and Alertmanager's are
checked by their own tools; the others (no binary here) are validated by structure."""

import subprocess
from typing import Any

import yaml

from monitoring.alerts.rules import RULES
from tests.monitoring.stack.paths import (
    ALERTMANAGER_CONFIG,
    COLLECTOR_CONFIG,
    LOKI_CONFIG,
    PROMETHEUS_CONFIG,
    TEMPO_CONFIG,
)

KINDS = ("receivers", "processors", "exporters", "connectors")


def _yaml(path: Any) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_promtool_checks_the_config_and_its_rule_files(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


def test_amtool_checks_the_alertmanager_config(amtool: str) -> None:
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_the_services_the_collector_and_itself() -> None:
    jobs = {job["job_name"]: job for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    targets = {
        name: [t for c in job["static_configs"] for t in c["targets"]] for name, job in jobs.items()
    }
    assert targets["inferwatch-model-server"] == ["model-server:9464"]
    assert targets["inferwatch-gateway"] == ["gateway:9465"]
    assert targets["otel-collector"] == ["otel-collector:8888"]
    assert targets["prometheus"] == ["localhost:9090"]


def _collector_components(config: dict[str, Any]) -> dict[str, set[str]]:
    return {kind: set(config.get(kind) or {}) for kind in KINDS}


def test_every_collector_pipeline_uses_defined_components_and_all_are_used() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    defined = _collector_components(config)
    pipelines = config["service"]["pipelines"]
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"], name
        assert pipeline["exporters"], name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                # a connector is an exporter of one pipeline and a receiver of another
                pool = "connectors" if component in defined["connectors"] else kind
                assert component in defined[pool], f"{name}: {component} is not defined"
                used[pool].add(component)
        if pipeline.get("processors"):
            assert pipeline["processors"][0] == "memory_limiter", name
    assert used == defined
    for connector in defined["connectors"]:  # fed by one pipeline, feeding another
        ends = [(p.get("exporters", []), p["receivers"]) for p in pipelines.values()]
        assert any(connector in exporters for exporters, _ in ends)
        assert any(connector in receivers for _, receivers in ends)
    assert set(config["service"]["extensions"]) == set(config["extensions"]) == {"health_check"}


def test_collector_pipelines_carry_each_signal_to_its_backend() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    pipelines, exporters = config["service"]["pipelines"], config["exporters"]
    assert "tail_sampling" in pipelines["traces"]["processors"]
    assert exporters[pipelines["traces"]["exporters"][0]]["endpoint"] == "tempo:4317"
    assert exporters[pipelines["logs"]["exporters"][0]]["endpoint"] == "http://loki:3100/otlp"
    remote_write = exporters[pipelines["metrics"]["exporters"][0]]["endpoint"]
    assert remote_write == "http://prometheus:9090/api/v1/write"
    assert "span_metrics" in pipelines["metrics"]["receivers"]
    assert "tail_sampling" not in pipelines["traces/span_metrics"].get("processors", [])


def test_collector_receivers_listen_on_all_interfaces() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert config["extensions"]["health_check"]["endpoint"].startswith("0.0.0.0:")
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    assert reader["prometheus"] == {"host": "0.0.0.0", "port": 8888}


def test_span_metrics_namespace_unit_and_sampling_policies_are_pinned() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    span_metrics = config["connectors"]["span_metrics"]
    assert span_metrics["namespace"] == "traces.span.metrics"
    assert span_metrics["histogram"]["unit"] == "s"
    assert span_metrics["exemplars"]["enabled"] is True
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] == 250  # the latency alert's threshold
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100


def test_tempo_is_monolithic_on_local_storage_and_generates_metrics() -> None:
    config = _yaml(TEMPO_CONFIG)
    assert config.get("target", "all") == "all"
    assert config["storage"]["trace"]["backend"] == "local"
    assert config["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == (
        "0.0.0.0:4317"
    )
    processors = config["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert set(processors) == {"service-graphs", "span-metrics"}
    remote_write = config["metrics_generator"]["storage"]["remote_write"]
    assert remote_write == [{"url": "http://prometheus:9090/api/v1/write", "send_exemplars": True}]


def test_loki_is_a_single_binary_on_tsdb_v13_with_structured_metadata() -> None:
    config = _yaml(LOKI_CONFIG)
    assert config.get("target", "all") == "all"
    [schema] = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == (
        "tsdb",
        "v13",
        "filesystem",
    )
    assert config["limits_config"]["allow_structured_metadata"] is True
