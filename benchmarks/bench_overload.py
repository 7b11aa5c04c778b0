"""Overload: what the model server does at three times its capacity, and how fast it recovers.

Run from the repository root (needs h2load, Debian package nghttp2-client):

    .venv/bin/python benchmarks/bench_overload.py [--factor 3] [--seconds 5] [--json PATH] \
        [--capacity REQ_PER_S]

A Python gRPC client costs about as much CPU per request as the server, so on a small machine
it cannot offer three times the server's capacity. The load comes from h2load instead (C,
HTTP/2 with the gRPC framing, byte-identical one-row ModelInfer requests), and a Python probe
(grpc.aio, closed loop at 8 clients) measures what a caller sees:

1. unloaded: the probe alone; its p99 is the reference;
2. capacity: h2load alone, closed loop with 32 streams, below the concurrency limit; its
   throughput is the capacity C;
3. overload: h2load open loop at factor x C requests per second (4 connections, up to 64
   streams each) for `--seconds`, with the probe running through it and 3 s beyond: the probe's
   refused calls (RESOURCE_EXHAUSTED) and how fast they came back, its accepted calls' p99, and
   the recovery time, from the end of the burst to the first 100 ms window of probe answers
   that has no error and a p99 within 2x the unloaded p99 (and every later window too).

h2load counts every gRPC answer as HTTP 200 (the gRPC status is in the trailers), so what it
reports is the offered and answered rate; the statuses come from the probe, and the server's
own count of every ModelInfer answer by status (h2load's included) from its `/metrics` after
the run.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

_LISTENING = re.compile(r"gRPC server listening on [^:\s]+:(\d+)")
_READY = "server ready with models"
_METRICS = re.compile(r"Prometheus metrics on (http://\S+/metrics)")
_ANSWERED = re.compile(r'^inferwatch_server_requests_total\{[^}]*\bstatus="(\w+)"[^}]*\} (\S+)$')
Sample = tuple[float, float, str]  # (sent at, latency s, status name)


def _request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=digits.MODEL_NAME)
    tensor = request.inputs.add(name="pixels", datatype="FP32")
    tensor.shape.extend([1, digits.N_FEATURES])
    request.raw_input_contents.append(np.zeros((1, digits.N_FEATURES), np.float32).tobytes())
    return request


async def _call(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> Sample:
    sent = time.time()
    began = time.perf_counter()
    try:
        await stub.ModelInfer(request, timeout=10)
        status = "OK"
    except grpc.aio.AioRpcError as exc:
        status = exc.code().name
    return sent, time.perf_counter() - began, status


async def _closed_loop(target: str, clients: int, seconds: float) -> list[Sample]:
    request = _request()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        end = time.perf_counter() + seconds
        samples: list[Sample] = []

        async def client() -> None:
            while time.perf_counter() < end:
                samples.append(await _call(stub, request))

        await asyncio.gather(*(client() for _ in range(clients)))
    return samples


def _h2load(target: str, body: Path, args: list[str]) -> subprocess.Popen[str]:
    """h2load posting `body` (a framed ModelInferRequest) to ModelInfer; `args` shape the load."""
    return subprocess.Popen(
        [
            *("h2load", *args, "-d", str(body), "-H", "content-type: application/grpc"),
            *("-H", "te: trailers", f"http://{target}/inference.GRPCInferenceService/ModelInfer"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _h2load_rate(output: str) -> float:
    """Requests per second h2load completed (its `finished in ..., N req/s` line)."""
    match = re.search(r"finished in [^,]+, ([0-9.]+) req/s", output)
    if match is None:
        raise RuntimeError(f"h2load printed no rate:\n{output}")
    return float(match.group(1))


def _stats(samples: list[Sample], seconds: float) -> dict[str, Any]:
    ok = np.array([latency for _, latency, status in samples if status == "OK"]) * 1000
    refused = (
        np.array([latency for _, latency, status in samples if status == "RESOURCE_EXHAUSTED"])
        * 1000
    )
    statuses: dict[str, int] = {}
    for _, _, status in samples:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "sent": len(samples),
        "offered_per_s": len(samples) / seconds,
        "ok_per_s": len(ok) / seconds,
        "statuses": statuses,
        "ok_p50_ms": float(np.percentile(ok, 50)) if len(ok) else None,
        "ok_p99_ms": float(np.percentile(ok, 99)) if len(ok) else None,
        "refused_p50_ms": float(np.percentile(refused, 50)) if len(refused) else None,
        "refused_p99_ms": float(np.percentile(refused, 99)) if len(refused) else None,
    }


def _recovery_s(samples: list[Sample], burst_end: float, limit_ms: float) -> float | None:
    """Seconds after `burst_end` from which every 100 ms window is healthy."""
    windows: dict[int, list[Sample]] = {}
    for sample in samples:
        windows.setdefault(int((sample[0] - burst_end) * 10), []).append(sample)
    healthy_from: float | None = None
    for index in sorted(windows):
        window = windows[index]
        latencies = [latency * 1000 for _, latency, status in window if status == "OK"]
        healthy = len(latencies) == len(window) and np.percentile(latencies, 99) <= limit_ms
        if not healthy:
            healthy_from = None
        elif healthy_from is None:
            healthy_from = max(0.0, index / 10)
    return healthy_from


def _server_answers(metrics_url: str) -> dict[str, int]:
    """ModelInfer answers by gRPC status since the server started, from its `/metrics`."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    answers: dict[str, int] = {}
    for line in text.splitlines():
        match = _ANSWERED.match(line)
        if match:
            answers[match.group(1)] = answers.get(match.group(1), 0) + int(float(match.group(2)))
    return answers


def _start_server(repository: Path) -> tuple[subprocess.Popen[str], str, str]:
    command = [sys.executable, "-m", "model_server", "--grpc-port", "0"]
    process = subprocess.Popen(
        [*command, "--model-repository", str(repository)],
        env={**os.environ, "MODEL_SERVER_METRICS_PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    metrics_url, port = None, None
    for line in process.stdout:
        if (metrics := _METRICS.search(line)) is not None:
            metrics_url = metrics.group(1)
        if (listening := _LISTENING.search(line)) is not None:
            port = listening.group(1)
        if _READY in line:  # it listens before the models are loaded: wait for them
            if metrics_url is None or port is None:
                raise RuntimeError("the model server logged no metrics endpoint or port")
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process, f"127.0.0.1:{port}", metrics_url
    raise RuntimeError("the model server exited before it was ready")


def _drain(output: TextIO) -> None:
    """Read the server's log to the end, so a full pipe never blocks its logging."""
    for _ in output:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=3.0, help="overload / capacity")
    parser.add_argument("--seconds", type=int, default=5, help="length of each phase")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--capacity",
        type=float,
        help="skip the capacity phase and take this many req/s as the capacity (for servers "
        "that refuse part of h2load's closed loop, which h2load would count as answered)",
    )
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        parser.error("h2load not found: apt-get install nghttp2-client")
    seconds = args.seconds
    with tempfile.TemporaryDirectory() as workdir:
        repository = Path(workdir) / "models"
        digits.ensure_default_model(repository)
        body = Path(workdir) / "request.grpc"
        message = _request().SerializeToString()
        body.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
        server, target, metrics_url = _start_server(repository)
        try:
            asyncio.run(_closed_loop(target, 8, 2))  # warm-up
            unloaded = _stats(asyncio.run(_closed_loop(target, 8, seconds)), seconds)
            if args.capacity is None:
                closed = _h2load(target, body, ["-c", "1", "-m", "32", "-D", str(seconds)])
                capacity = _h2load_rate(closed.communicate()[0])
            else:
                capacity = args.capacity
            rate = args.factor * capacity
            burst = _h2load(
                target,
                body,
                ["-c", "4", "-m", "64", "--rps", str(rate / 4), "-D", str(seconds)],
            )
            began = time.time()
            probe = asyncio.run(_closed_loop(target, 8, seconds + 3))
            offered = _h2load_rate(burst.communicate()[0])
            burst_end = began + seconds
            answers = _server_answers(metrics_url)
        finally:
            server.terminate()
            server.wait(30)
    during = [sample for sample in probe if sample[0] < burst_end]
    after = [sample for sample in probe if sample[0] >= burst_end]
    limit_ms = 2 * unloaded["ok_p99_ms"]
    results = {
        "unloaded_probe": unloaded,
        "capacity_per_s": capacity,
        "target_rate_per_s": rate,
        "h2load_answered_per_s": offered,
        "probe_during_overload": _stats(during, seconds),
        "recovery_limit_p99_ms": limit_ms,
        "recovery_s": _recovery_s(after, burst_end, limit_ms),
        "server_answers_by_status": answers,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
