"""Soak: ten minutes at half capacity; resident memory and open file descriptors must stay flat.

Run from the repository root (not part of CI):

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--json PATH]

Starts a model server (shipped settings, digits with batching), measures its capacity with a
5 s closed loop of 32 clients (`inferwatch-load`), then runs `inferwatch-load` open loop at half
that rate for `--minutes`, sampling the server's resident memory and open file descriptors every
10 s. Reports the samples, the answers the load generator saw by status, the growth of each
series between the first and the last minute (medians, so one GC pause does not decide it), and
the spread of resident memory over the second half (the bounded stores, drift windows and
prediction store, fill during the first minutes).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from model_server import digits

_LISTENING = re.compile(r"gRPC server listening on [^:\s]+:(\d+)")
SAMPLE_EVERY_S = 10


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _loadgen(target: str) -> list[str]:
    return [sys.executable, "-m", "loadgen", "--target", f"grpc://{target}"]


def _load(target: str, *args: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [*_loadgen(target), *args, "--json", out.name],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        repository = Path(workdir) / "models"
        digits.ensure_default_model(repository)
        command = [sys.executable, "-m", "model_server", "--grpc-port", "0"]
        server = subprocess.Popen(
            [*command, "--model-repository", str(repository)],
            env={**os.environ, "MODEL_SERVER_METRICS_PORT": "0"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert server.stdout is not None
            target = ""
            for line in server.stdout:
                match = _LISTENING.search(line)
                if match:
                    target = f"127.0.0.1:{match.group(1)}"
                    break
            threading.Thread(target=server.stdout.read, daemon=True).start()  # keep it drained
            capacity = _load(target, "--concurrency", "32", "--duration", "5", "--warmup", "2")
            rate = capacity["ok_rps"] / 2
            seconds = args.minutes * 60
            soak = subprocess.Popen(
                [
                    *_loadgen(target),
                    *("--rate", f"{rate:.0f}", "--duration", f"{seconds:.0f}"),
                    *("--json", f"{workdir}/soak.json"),
                ],
                stdout=subprocess.DEVNULL,
            )
            samples: list[tuple[float, float, int]] = []
            began = time.monotonic()
            while soak.poll() is None:
                samples.append(
                    (time.monotonic() - began, _rss_mb(server.pid), _open_fds(server.pid))
                )
                time.sleep(SAMPLE_EVERY_S)
            if soak.returncode != 0:
                raise RuntimeError(f"inferwatch-load exited with {soak.returncode}")
            result = json.loads(Path(f"{workdir}/soak.json").read_text())
        finally:
            server.terminate()
            server.wait(60)
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    first = [s for s in samples if s[0] <= 60]
    last = [s for s in samples if s[0] >= samples[-1][0] - 60]
    report = {
        "capacity_per_s": capacity["ok_rps"],
        "rate_per_s": rate,
        "minutes": args.minutes,
        "load": {
            key: result[key]
            for key in ("ok_rps", "errors", "skipped", "statuses", "error_details", "latency_ms")
        },
        "rss_growth_mb": statistics.median(s[1] for s in last)
        - statistics.median(s[1] for s in first),
        "fd_growth": statistics.median(s[2] for s in last) - statistics.median(s[2] for s in first),
        "rss_growth_second_half_mb": max(s[1] for s in half) - min(s[1] for s in half),
        "samples": [
            {"t_s": round(t), "rss_mb": round(rss, 1), "fds": fds} for t, rss, fds in samples
        ],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
