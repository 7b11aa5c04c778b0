"""Process and GPU instruments: GPU metrics are absent, with one log line, when NVML is."""

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel.system_metrics import register_gpu_metrics, register_process_metrics

Points = dict[str, list[tuple[dict[str, Any], float]]]


Metered = tuple[Meter, InMemoryMetricReader]


@pytest.fixture
def metered() -> Iterator[Metered]:
    """A meter on a local provider, and the in-memory reader that collects it."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider.get_meter("tests.otel"), reader
    provider.shutdown()


def _points(reader: InMemoryMetricReader) -> Points:
    """metric name -> [(attributes, value)] of one collection (empty: no instrument at all)."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }


def test_without_nvml_one_log_line_and_no_gpu_metrics(
    metered: Metered, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def library_not_found() -> None:
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", library_not_found)
    caplog.set_level(logging.DEBUG, logger="otel.system_metrics")

    assert register_gpu_metrics(metered[0]) == 0
    for _ in range(2):
        assert not [name for name in _points(metered[1]) if name.startswith("hw.gpu")]

    [record] = [r for r in caplog.records if r.name == "otel.system_metrics"]
    assert record.levelno == logging.INFO
    assert "NVML Shared Library Not Found" in record.getMessage()


def test_this_machine_registers_without_raising(
    metered: Metered, caplog: pytest.LogCaptureFixture
) -> None:
    """Here (no GPU) NVML fails to load; on a GPU machine the devices are reported."""
    caplog.set_level(logging.INFO, logger="otel.system_metrics")
    devices = register_gpu_metrics(metered[0])
    gpu_metrics = {name for name in _points(metered[1]) if name.startswith("hw.gpu")}
    assert bool(gpu_metrics) == (devices > 0)
    assert len([r for r in caplog.records if r.name == "otel.system_metrics"]) == 1


def test_gpu_metrics_per_device(metered: Metered, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetName": lambda handle: f"Fake GPU {handle}",
        "nvmlDeviceGetUtilizationRates": lambda handle: SimpleNamespace(gpu=40 + handle),
        "nvmlDeviceGetMemoryInfo": lambda handle: SimpleNamespace(used=handle + 1, total=80),
    }
    for name, function in fake.items():
        monkeypatch.setattr(pynvml, name, function)

    assert register_gpu_metrics(metered[0]) == 2
    points = _points(metered[1])

    devices = [{"hw.id": "0", "hw.name": "Fake GPU 0"}, {"hw.id": "1", "hw.name": "Fake GPU 1"}]
    assert points["hw.gpu.utilization"] == [(devices[0], 0.40), (devices[1], 0.41)]
    assert points["hw.gpu.memory.usage"] == [(devices[0], 1), (devices[1], 2)]
    assert points["hw.gpu.memory.limit"] == [(devices[0], 80), (devices[1], 80)]


def test_process_cpu_and_memory(metered: Metered) -> None:
    register_process_metrics(metered[0])
    points = _points(metered[1])

    cpu = dict((attributes["cpu.mode"], value) for attributes, value in points["process.cpu.time"])
    assert set(cpu) == {"user", "system"}
    assert cpu["user"] > 0
    [(_, rss)] = points["process.memory.usage"]
    assert rss > 10 * 1024 * 1024
