"""The live progress line: a bar of the way to the duration or the request count, the rate, p99
and errors of the last interval, redrawn in place on a terminal."""

import asyncio
import time
from typing import TextIO

from loadgen.recorder import Recorder, percentiles_ms
from loadgen.runner import Run

INTERVAL_S = 0.5
BAR_WIDTH = 20


async def show(run: Run, recorder: Recorder, stream: TextIO) -> None:
    """Redraw the line every INTERVAL_S until cancelled; then end it with a newline."""
    total = run.plan.duration_s
    last = time.perf_counter()
    recorder.take_window()
    try:
        while True:
            await asyncio.sleep(INTERVAL_S)
            now = time.perf_counter()
            window = recorder.take_window()
            done = len(window.latencies) + window.errors
            p99 = percentiles_ms(window.latencies).get("p99")
            if run.plan.requests:
                fraction = recorder.total / run.plan.requests
                where = f"{recorder.total:,}/{run.plan.requests:,} requests"
            else:
                fraction = run.elapsed_s / total if total else 0.0
                where = f"{run.elapsed_s:6.1f}" + (f"/{total:.0f} s" if total else " s")
            line = (
                f"{_bar(fraction)} {where}  {done / (now - last):8,.0f} req/s  "
                f"p99 {'-' if p99 is None else f'{p99:.2f}'} ms  "
                f"errors {recorder.errors:,} ({_share(recorder.errors, recorder.total)})"
            )
            stream.write(f"\r{line}\x1b[K")
            stream.flush()
            last = now
    finally:
        stream.write("\n")
        stream.flush()


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0%"


def _bar(fraction: float) -> str:
    """`[#####...............]` for `fraction` of the way (clamped to 0..1)."""
    filled = round(BAR_WIDTH * min(max(fraction, 0.0), 1.0))
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"
