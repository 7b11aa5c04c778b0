"""A real Prometheus scrapes `/metrics` and stores our exemplars with the spans' trace ids."""

import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from otel import DURATION_BUCKETS_S
from tests.conftest import StartPrometheus
from tests.otel.support import MakeTelemetry

EXEMPLAR_TIMEOUT_S = 30


def test_prometheus_stores_exemplars_with_our_trace_ids(
    make_telemetry: MakeTelemetry, start_prometheus: StartPrometheus
) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    duration = telemetry.meter_provider.get_meter("tests.otel").create_histogram(
        "inferwatch.request.duration",
        unit="s",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
    )
    trace_ids = set()
    for value in (0.002, 0.03, 0.7):  # three different buckets: one exemplar each
        with tracer.start_as_current_span("predict") as span:
            duration.record(value, {"model": "digits"})
        trace_ids.add(f"{span.get_span_context().trace_id:032x}")

    prometheus = start_prometheus(telemetry.metrics_port)
    now = time.time()
    query = urllib.parse.urlencode(
        {
            "query": "inferwatch_request_duration_seconds_bucket",
            "start": now - 600,
            "end": now + 600,
        }
    )

    def stored_trace_ids(answer: Any) -> set[str]:
        if not answer or answer.get("status") != "success":
            return set()
        return {
            exemplar["labels"]["trace_id"]
            for series in answer["data"]
            for exemplar in series["exemplars"]
        }

    answer = prometheus.poll(
        f"/api/v1/query_exemplars?{query}",
        lambda answer: len(stored_trace_ids(answer)) >= len(trace_ids),
        EXEMPLAR_TIMEOUT_S,
    )
    assert stored_trace_ids(answer) == trace_ids
