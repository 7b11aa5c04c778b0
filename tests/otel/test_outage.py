"""An OTLP endpoint that refuses, blackholes or crawls never slows the instrumented code down,
memory stays bounded (small queues drop; tracemalloc checks it), shutdown is bounded, and the
losses show on /metrics.
"""

import logging
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import otel
from tests.otel.otlp_receiver import OtlpGrpcReceiver
from tests.otel.support import Blackhole, MakeTelemetry, free_port, sample_value

ITERATIONS = 3000
MEMORY_READ_AT = (1000, ITERATIONS - 1)
SERVED_LOGGER = "tests.otel.outage"
MEMORY_GROWTH_BOUND = 256 * 1024
TELEMETRY_CODE = ("*/site-packages/opentelemetry/*", str(Path(otel.__file__).parent / "*"))
SHUTDOWN_TIMEOUT_S = 2.0
FAILURE_TIMEOUT_S = 15.0
OTLP_TIMEOUT_S = 2
"""Exporter timeout: a blocking export would show up as an iteration this long."""


@pytest.fixture(params=["refused", "blackholed", "slow"])
def outage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An unhealthy OTLP endpoint, configured with small queues so that they overflow."""
    stop: Callable[[], None] = lambda: None  # noqa: E731 (nothing to stop for "refused")
    if request.param == "refused":
        endpoint = f"http://127.0.0.1:{free_port()}"
    elif request.param == "blackholed":
        blackhole = Blackhole()
        endpoint, stop = blackhole.endpoint, blackhole.stop
    else:
        receiver = OtlpGrpcReceiver(delay_s=0.5)
        endpoint, stop = receiver.endpoint, receiver.stop
    for name, value in {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TIMEOUT": str(OTLP_TIMEOUT_S),  # seconds in the Python SDK
        "OTEL_BSP_MAX_QUEUE_SIZE": "64",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_BLRP_MAX_QUEUE_SIZE": "64",
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "16",
        "OTEL_BLRP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }.items():
        monkeypatch.setenv(name, value)
    yield request.param
    stop()


def test_serving_survives_otlp_outage(outage: str, make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry(shutdown_timeout_s=SHUTDOWN_TIMEOUT_S)
    port = telemetry.metrics_port
    assert port
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    duration = telemetry.meter_provider.get_meter("tests.otel").create_histogram(
        "inferwatch.request.duration", unit="s"
    )
    log = logging.getLogger(SERVED_LOGGER)

    timings = []
    traced: dict[int, int] = {}
    tracemalloc.start()
    try:
        with _built_log_records() as built:
            for iteration in range(ITERATIONS):
                if iteration in MEMORY_READ_AT:
                    traced[iteration] = _telemetry_memory()
                started = time.perf_counter()
                with tracer.start_as_current_span("predict"):
                    duration.record(0.003, {"model": "digits"})
                    log.info("request %d served", iteration)
                timings.append(time.perf_counter() - started)
    finally:
        tracemalloc.stop()
    # The queues hold 64 spans and 64 log records; with queues that never fill, the 2,000
    # iterations between the two readings kept about 2.4 MB, against 25-40 KB here.
    assert traced[MEMORY_READ_AT[1]] - traced[MEMORY_READ_AT[0]] < MEMORY_GROWTH_BOUND

    # Generous bounds: ~0.1 ms is typical; an export on this thread would take seconds.
    assert statistics.mean(timings) < 0.005
    assert max(timings) < OTLP_TIMEOUT_S / 2
    # 3000 spans and log records against queues of 64 that drain slowly, if at all.
    for signal in ("traces", "logs"):
        dropped = sample_value(
            port, "inferwatch_telemetry_dropped_total", signal=signal, reason="queue_full"
        )
        assert dropped > ITERATIONS / 2
    # Each drop used to build the SDK's "Queue full" record on this thread (~7 µs) for its
    # duplicate filter to discard; now a full queue is logged once per signal.
    batch_logger = "opentelemetry.sdk._shared_internal"
    assert not [r for r in built if r.name == batch_logger and r.levelno < logging.ERROR]
    full_queues = [r.getMessage() for r in built if "queue full" in r.getMessage()]
    assert sorted(full_queues) == [
        f"Telemetry export queue full: dropping {signal} (counted in "
        "inferwatch_telemetry_dropped_total; logged again in 60 s at most)"
        for signal in ("logs", "traces")
    ]
    if outage != "slow":
        _wait_for_export_failures(port, ("traces", "metrics", "logs"))

    started = time.perf_counter()
    telemetry.shutdown()
    assert time.perf_counter() - started < SHUTDOWN_TIMEOUT_S + 2


def _telemetry_memory() -> int:
    """Bytes allocated, and still alive, by OpenTelemetry's and our telemetry code: what a
    queue that kept growing would hold (pytest's own capture of the log records is left out)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in TELEMETRY_CODE]
        # What our JSON formatter adds to each log record stays with the record, which pytest
        # keeps for its report; the formatter itself keeps nothing.
        + [tracemalloc.Filter(False, str(Path(otel.__file__).parent / "logs.py"))]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


@contextmanager
def _built_log_records() -> Iterator[list[logging.LogRecord]]:
    """Every log record built in the block (but the test's own), whether or not a filter then
    discards it."""
    built: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.name != SERVED_LOGGER:  # kept, they would count against the memory bound
            built.append(record)
        return record

    logging.setLogRecordFactory(counting)
    try:
        yield built
    finally:
        logging.setLogRecordFactory(factory)


def _wait_for_export_failures(port: int, signals: tuple[str, ...]) -> None:
    """Polls /metrics until every signal counts an export failure (exports fail off-thread)."""
    deadline = time.monotonic() + FAILURE_TIMEOUT_S
    missing = set(signals)
    while missing and time.monotonic() < deadline:
        missing = {
            signal
            for signal in missing
            if not sample_value(port, "inferwatch_telemetry_export_failures_total", signal=signal)
        }
        if missing:
            time.sleep(0.1)  # no event to wait on from outside: poll the endpoint
    assert not missing, f"no export failure counted for {sorted(missing)}"
