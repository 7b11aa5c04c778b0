"""Keeps the process's long-lived objects out of the garbage collector's full collections.

Torch, grpc, the OpenTelemetry SDK and the loaded models leave about 270,000 tracked objects
that live as long as the process. Each full (generation 2) collection walks all of them: under
load with traces exported, one ran every 2 to 3 s and took 100 to 175 ms, which made the p99 of
every request that waited behind it (benchmarks/RESULTS.md, "Telemetry cost").
`gc.freeze()` moves every object alive now into a permanent generation that collections skip.
The gateway uses it too, once before it serves (its full collections took 61 to 70 ms).
"""

import gc
import logging
import time

logger = logging.getLogger(__name__)


def freeze_long_lived() -> None:
    """Collect what is garbage now, then exempt every survivor from future collections.

    Called once the models are loaded, and again after each run-time load, unload or poll that
    changed versions (once per call, however many versions): unfreezing first lets a collection
    reclaim an unloaded version's cyclic garbage before the rest is frozen again. Blocks the
    caller for one full collection (about 50 to 150 ms).
    """
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    logger.info(
        "%d long-lived objects exempted from garbage collection (%.0f ms)",
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
    )
