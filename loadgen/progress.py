"""The live progress line: elapsed time, rate, p99 and errors of the last interval, redrawn in
place on a terminal."""

import asyncio
import time
from typing import TextIO

from loadgen.recorder import Recorder, percentiles_ms
from loadgen.runner import Run

INTERVAL_S = 0.5


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
            elapsed = f"{run.elapsed_s:6.1f}" + (f"/{total:.0f} s" if total else " s")
            line = (
                f"{elapsed}  {done / (now - last):8,.0f} req/s  "
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
