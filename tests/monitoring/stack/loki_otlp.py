"""How Loki stores an OTLP log record (its OTLP push handler, as of the pinned 3.7): which
resource attributes become index labels and what goes to structured metadata, so the tests
can check the correlation queries against the records our services really send."""

import re
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.otel.otlp_receiver import attributes

DEFAULT_INDEX_LABELS = (
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name",
    "k8s.replicaset.name", "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name",
    "k8s.cronjob.name", "k8s.job.name",
)  # fmt: skip
"""distributor.otlp_config.default_resource_attributes_as_index_labels."""


def normalize(name: str) -> str:
    """Attribute name -> Loki label name (dots and other specials become `_`)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _action(name: str, configs: list[dict[str, Any]]) -> str:
    """The first matching attributes_config wins; unmatched attributes are structured metadata."""
    for config in configs:
        if name in config.get("attributes", []):
            return str(config.get("action", "structured_metadata"))
    return "structured_metadata"


def to_loki(
    resource: dict[str, Any], record: LogRecord, otlp_config: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str], str]:
    """(index labels, structured metadata, line) of one record under `limits_config.otlp_config`."""
    resource_config = otlp_config.get("resource_attributes", {})
    configs = list(resource_config.get("attributes_config", []))
    if not resource_config.get("ignore_defaults", False):
        configs = [{"action": "index_label", "attributes": list(DEFAULT_INDEX_LABELS)}, *configs]
    labels: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in resource.items():
        action = _action(name, configs)
        if action == "index_label":
            labels[normalize(name)] = str(value)
        elif action == "structured_metadata":
            metadata[normalize(name)] = str(value)
    for name, value in attributes(record.attributes).items():
        metadata[normalize(name)] = str(value)
    if record.severity_text:
        metadata["severity_text"] = record.severity_text
    if record.trace_id:
        metadata["trace_id"] = record.trace_id.hex()
    if record.span_id:
        metadata["span_id"] = record.span_id.hex()
    return labels, metadata, record.body.string_value
