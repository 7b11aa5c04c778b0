"""Observable process (CPU, memory) and NVIDIA GPU (utilisation, memory) instruments.

GPU instruments exist only when NVML initialises and finds a device; otherwise one log line
says why and nothing is reported.
"""

import logging
from collections.abc import Callable, Iterable

import psutil
import pynvml
from opentelemetry.metrics import CallbackOptions, Meter, Observation

logger = logging.getLogger(__name__)


def register_process_metrics(meter: Meter) -> None:
    """`process.cpu.time` {cpu.mode} (s) and `process.memory.usage` (resident set, By)."""
    process = psutil.Process()

    def cpu_time(_: CallbackOptions) -> Iterable[Observation]:
        times = process.cpu_times()
        return [
            Observation(times.user, {"cpu.mode": "user"}),
            Observation(times.system, {"cpu.mode": "system"}),
        ]

    def memory_usage(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(process.memory_info().rss)]

    meter.create_observable_counter(
        "process.cpu.time", [cpu_time], unit="s", description="CPU time used by this process."
    )
    meter.create_observable_up_down_counter(
        "process.memory.usage",
        [memory_usage],
        unit="By",
        description="Resident set size of this process.",
    )


def register_gpu_metrics(meter: Meter) -> int:
    """Per-device `hw.gpu.utilization` (0-1), `hw.gpu.memory.usage` and `.limit` (By).

    Devices carry `hw.id` (the NVML index) and `hw.name`. Returns the number of devices; 0 when
    NVML is unavailable (no driver, no library) or finds none, in which case nothing is
    registered.
    """
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        devices = [
            (pynvml.nvmlDeviceGetHandleByIndex(index), {"hw.id": str(index)})
            for index in range(count)
        ]
        for handle, attributes in devices:
            attributes["hw.name"] = pynvml.nvmlDeviceGetName(handle)
    except pynvml.NVMLError as error:
        logger.info("No GPU metrics: NVML unavailable (%s)", error)
        return 0
    if not devices:
        logger.info("No GPU metrics: NVML found no device")
        pynvml.nvmlShutdown()
        return 0

    def utilization(_: CallbackOptions) -> Iterable[Observation]:
        for handle, attributes in devices:
            try:
                rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            except pynvml.NVMLError:
                logger.debug("GPU %s: utilisation not readable", attributes["hw.id"])
                continue
            yield Observation(rates.gpu / 100, attributes)

    def memory(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for handle, attributes in devices:
                try:
                    info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                except pynvml.NVMLError:
                    logger.debug("GPU %s: memory not readable", attributes["hw.id"])
                    continue
                yield Observation(getattr(info, field), attributes)

        return observe

    meter.create_observable_gauge(
        "hw.gpu.utilization",
        [utilization],
        unit="1",
        description="Fraction of time the GPU was busy over the driver's last sample period.",
    )
    meter.create_observable_up_down_counter(
        "hw.gpu.memory.usage", [memory("used")], unit="By", description="GPU memory in use."
    )
    meter.create_observable_up_down_counter(
        "hw.gpu.memory.limit", [memory("total")], unit="By", description="GPU memory size."
    )
    logger.info("GPU metrics for %d device(s)", len(devices))
    return len(devices)
