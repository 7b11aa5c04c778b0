"""Telemetry bootstrap shared by the model server and the gateway.

`setup_telemetry(TelemetrySettings(), service_name=..., service_version=...)` once per process;
library code uses only the OpenTelemetry API (`trace.get_tracer`, `metrics.get_meter`).
"""

from otel.bootstrap import DURATION_BUCKETS_S, build_resource, setup_telemetry
from otel.settings import TelemetrySettings
from otel.telemetry import Telemetry

__all__ = [
    "DURATION_BUCKETS_S",
    "Telemetry",
    "TelemetrySettings",
    "build_resource",
    "setup_telemetry",
]
