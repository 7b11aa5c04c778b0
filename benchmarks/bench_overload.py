"""Overload: what the model server (or the gateway) does at three times its capacity, and how
fast it recovers.

Run from the repository root (needs h2load, Debian package nghttp2-client):

    .venv/bin/python benchmarks/bench_overload.py [--factor 3] [--seconds 5] [--json PATH] \
        [--capacity REQ_PER_S] [--gateway [--gateway-limit N]]

A Python client costs about as much CPU per request as the server, so on a small machine it
cannot offer three times the server's capacity. The load comes from h2load instead (C,
byte-identical one-row digits requests), and a probe (a closed loop of 8 clients) measures what
a caller sees:

1. unloaded: the probe alone; its p99 is the reference;
2. capacity: h2load alone, a closed loop of 32, below the concurrency limit; its throughput is
   the capacity C;
3. overload: h2load open loop at factor x C requests per second for `--seconds`, with the probe
   running through it and 3 s beyond: the probe's refused calls and how fast they came back,
   its accepted calls' p99, and the recovery time, from the end of the burst to the first
   100 ms window of probe answers that has no error and a p99 within 2x the unloaded p99 (and
   every later window too).

Model server (the default): ModelInfer over gRPC. h2load speaks HTTP/2 with the gRPC framing
(4 connections, up to 64 streams each); the probe is grpc.aio; a refusal is
RESOURCE_EXHAUSTED. h2load counts every gRPC answer as HTTP 200 (the gRPC status is in the
trailers), so the statuses come from the probe, and the server's own count of every ModelInfer
answer by status (h2load's included) from its `/metrics` after the run.

`--gateway`: the same model server behind the gateway, REST JSON to
`/v2/models/digits/infer` over HTTP/1.1. h2load uses 128 connections for the burst and 8 for
the probe (one request at a time each; its per-request log gives the probe's latencies); a
refusal is 429. `--gateway-limit` sets `GATEWAY_MAX_CONCURRENT_INFERENCES` (0: none).
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

_LISTENING = re.compile(r"gRPC server listening on [^:\s]+:(\d+)")
_READY = "server ready with models"
_GATEWAY_LISTENING = re.compile(r'gateway listening on (http://[^\s"]+)')
_GATEWAY_READY = "gateway ready"
_METRICS = re.compile(r"Prometheus metrics on (http://\S+/metrics)")
_GRPC_ANSWERS = ("inferwatch_server_requests_total", "status")
_HTTP_ANSWERS = ("http_server_request_duration_seconds_count", "http_response_status_code")
_INFER_PATH = f"/v2/models/{digits.MODEL_NAME}/infer"
BURST_CONNECTIONS = 128
"""HTTP/1.1 connections of the gateway burst (one request in flight on each)."""
Sample = tuple[float, float, str]  # (sent at, latency s, status)


@dataclass(frozen=True)
class Target:
    """Where the load goes, and how to read what came back."""

    h2load: Callable[[list[str]], "subprocess.Popen[str]"]
    """h2load with these load-shaping arguments, aimed at the target."""
    probe: Callable[[int, float], list[Sample]]
    """A closed loop of this many clients for this many seconds."""
    closed_loop_args: list[str]
    """h2load's arguments for the capacity phase: 32 requests in flight."""
    burst_args: Callable[[float], list[str]]
    """h2load's arguments for an open loop at this many requests per second."""
    metrics_url: str
    answers: tuple[str, str]
    """The metric counting the server's inference answers, and its status label."""
    ok: str
    refused: str


def _request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=digits.MODEL_NAME)
    tensor = request.inputs.add(name="pixels", datatype="FP32")
    tensor.shape.extend([1, digits.N_FEATURES])
    request.raw_input_contents.append(np.zeros((1, digits.N_FEATURES), np.float32).tobytes())
    return request


def _json_body() -> bytes:
    data = [0.0] * digits.N_FEATURES
    tensor = {"name": "pixels", "datatype": "FP32", "shape": [1, digits.N_FEATURES], "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


async def _call(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> Sample:
    sent = time.time()
    began = time.perf_counter()
    try:
        await stub.ModelInfer(request, timeout=10)
        status = "OK"
    except grpc.aio.AioRpcError as exc:
        status = exc.code().name
    return sent, time.perf_counter() - began, status


async def _grpc_closed_loop(target: str, clients: int, seconds: float) -> list[Sample]:
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


def _run_h2load(command: list[str]) -> "subprocess.Popen[str]":
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _grpc_target(address: str, body: Path, metrics_url: str) -> Target:
    url = f"http://{address}/inference.GRPCInferenceService/ModelInfer"
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    return Target(
        h2load=lambda args: _run_h2load(["h2load", *args, "-d", str(body), *headers, url]),
        probe=lambda clients, seconds: asyncio.run(_grpc_closed_loop(address, clients, seconds)),
        closed_loop_args=["-c", "1", "-m", "32"],
        burst_args=lambda rate: ["-c", "4", "-m", "64", "--rps", str(rate / 4)],
        metrics_url=metrics_url,
        answers=_GRPC_ANSWERS,
        ok="OK",
        refused="RESOURCE_EXHAUSTED",
    )


def _http_target(base_url: str, body: Path, metrics_url: str, workdir: Path) -> Target:
    command = ["h2load", "--h1", "-d", str(body), "-H", "content-type: application/json"]
    url = base_url + _INFER_PATH

    def probe(clients: int, seconds: float) -> list[Sample]:
        log = workdir / "probe.log"
        log.unlink(missing_ok=True)
        args = ["-c", str(clients), "-D", str(int(seconds)), "--log-file", str(log)]
        h2load = _run_h2load([*command, *args, url])
        output = h2load.communicate()[0]
        if h2load.returncode != 0:
            raise RuntimeError(f"h2load failed:\n{output}")
        return _h2load_samples(log)

    return Target(
        h2load=lambda args: _run_h2load([*command, *args, url]),
        probe=probe,
        closed_loop_args=["-c", "32"],
        burst_args=lambda rate: [
            *("-c", str(BURST_CONNECTIONS), "--rps", str(rate / BURST_CONNECTIONS))
        ],
        metrics_url=metrics_url,
        answers=_HTTP_ANSWERS,
        ok="200",
        refused="429",
    )


def _h2load_samples(log: Path) -> list[Sample]:
    """h2load's per-request log: start (µs since the epoch), HTTP status, duration (µs)."""
    samples = []
    for line in log.read_text().splitlines():
        start_us, status, duration_us = line.split()
        samples.append((int(start_us) / 1e6, int(duration_us) / 1e6, status))
    return samples


def _h2load_rate(output: str) -> float:
    """Requests per second h2load completed (its `finished in ..., N req/s` line)."""
    match = re.search(r"finished in [^,]+, ([0-9.]+) req/s", output)
    if match is None:
        raise RuntimeError(f"h2load printed no rate:\n{output}")
    return float(match.group(1))


def _h2load_statuses(output: str) -> dict[str, int]:
    """h2load's answers by HTTP status class (for gRPC all 2xx: the status is in trailers)."""
    match = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if match is None:
        raise RuntimeError(f"h2load printed no status codes:\n{output}")
    return dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, match.groups()), strict=True))


def _stats(samples: list[Sample], seconds: float, target: Target) -> dict[str, Any]:
    ok = np.array([latency for _, latency, status in samples if status == target.ok]) * 1000
    refused = np.array([lat for _, lat, status in samples if status == target.refused]) * 1000
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


def _recovery_s(samples: list[Sample], burst_end: float, limit_ms: float, ok: str) -> float | None:
    """Seconds after `burst_end` from which every 100 ms window is healthy."""
    windows: dict[int, list[Sample]] = {}
    for sample in samples:
        windows.setdefault(int((sample[0] - burst_end) * 10), []).append(sample)
    healthy_from: float | None = None
    for index in sorted(windows):
        window = windows[index]
        latencies = [latency * 1000 for _, latency, status in window if status == ok]
        healthy = len(latencies) == len(window) and np.percentile(latencies, 99) <= limit_ms
        if not healthy:
            healthy_from = None
        elif healthy_from is None:
            healthy_from = max(0.0, index / 10)
    return healthy_from


def _answers(target: Target) -> dict[str, int]:
    """The server's own count of inference answers by status since it started (`/metrics`)."""
    with urllib.request.urlopen(target.metrics_url, timeout=10) as response:
        text = response.read().decode()
    metric, label = target.answers
    status = re.compile(rf'\b{label}="([^"]*)"')
    answers: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line.rsplit(" ", 1)
            found = status.search(labels)  # a label value may hold braces: no [^}]* here
            if found:
                answers[found.group(1)] = answers.get(found.group(1), 0) + int(float(value))
    return answers


def _start(
    command: list[str],
    env: dict[str, str],
    address: re.Pattern[str],
    ready: str,
    processes: list["subprocess.Popen[str]"],
) -> tuple[str, str]:
    """Start a service (added to `processes`) and wait for its ready line; its address and
    metrics URL."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    processes.append(process)
    assert process.stdout is not None
    metrics_url, found = None, None
    for line in process.stdout:
        if (metrics := _METRICS.search(line)) is not None:
            metrics_url = metrics.group(1)
        if (listening := address.search(line)) is not None:
            found = listening.group(1)
        if ready in line:  # the model server listens before its models are loaded
            if metrics_url is None or found is None:
                raise RuntimeError(f"{command[2]} logged no metrics endpoint or address")
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return found, metrics_url
    raise RuntimeError(f"{command[2]} exited before it was ready")


def _drain(output: TextIO) -> None:
    """Read a service's log to the end, so a full pipe never blocks its logging."""
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
    parser.add_argument(
        "--gateway", action="store_true", help="overload the gateway (REST) in front of it"
    )
    parser.add_argument(
        "--gateway-limit",
        type=int,
        help="GATEWAY_MAX_CONCURRENT_INFERENCES for the gateway (default: the gateway's)",
    )
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        parser.error("h2load not found: apt-get install nghttp2-client")
    if args.gateway_limit is not None and not args.gateway:
        parser.error("--gateway-limit needs --gateway")
    processes: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            target = _start_target(Path(tmp), args.gateway, args.gateway_limit, processes)
            results = _measure(target, args.seconds, args.factor, args.capacity)
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(30)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _start_target(
    workdir: Path, gateway: bool, limit: int | None, processes: list["subprocess.Popen[str]"]
) -> Target:
    """Start the model server (and the gateway) serving digits; each process joins
    `processes` as soon as it runs, for the caller to stop."""
    repository = workdir / "models"
    digits.ensure_default_model(repository)
    command = [sys.executable, "-m", "model_server", "--grpc-port", "0"]
    port, server_metrics = _start(
        [*command, "--model-repository", str(repository)],
        {"MODEL_SERVER_METRICS_PORT": "0"},
        _LISTENING,
        _READY,
        processes,
    )
    address = f"127.0.0.1:{port}"
    if not gateway:
        body = workdir / "request.grpc"
        message = _request().SerializeToString()
        body.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
        return _grpc_target(address, body, server_metrics)
    env = {"GATEWAY_METRICS_PORT": "0"}
    if limit is not None:
        env["GATEWAY_MAX_CONCURRENT_INFERENCES"] = str(limit)
    base_url, gateway_metrics = _start(
        [sys.executable, "-m", "gateway", "--port", "0", "--backend", address],
        env,
        _GATEWAY_LISTENING,
        _GATEWAY_READY,
        processes,
    )
    body = workdir / "request.json"
    body.write_bytes(_json_body())
    return _http_target(base_url, body, gateway_metrics, workdir)


def _measure(target: Target, seconds: int, factor: float, capacity: float | None) -> dict[str, Any]:
    target.probe(8, 2)  # warm-up
    unloaded = _stats(target.probe(8, seconds), seconds, target)
    if capacity is None:
        closed = target.h2load([*target.closed_loop_args, "-D", str(seconds)])
        capacity = _h2load_rate(closed.communicate()[0])
    rate = factor * capacity
    burst = target.h2load([*target.burst_args(rate), "-D", str(seconds)])
    began = time.time()
    probe = target.probe(8, seconds + 3)
    burst_output = burst.communicate()[0]
    burst_end = began + seconds
    during = [sample for sample in probe if sample[0] < burst_end]
    after = [sample for sample in probe if sample[0] >= burst_end]
    limit_ms = 2 * unloaded["ok_p99_ms"]
    return {
        "unloaded_probe": unloaded,
        "capacity_per_s": capacity,
        "target_rate_per_s": rate,
        "h2load_answered_per_s": _h2load_rate(burst_output),
        "h2load_statuses": _h2load_statuses(burst_output),
        "probe_during_overload": _stats(during, seconds, target),
        "recovery_limit_p99_ms": limit_ms,
        "recovery_s": _recovery_s(after, burst_end, limit_ms, target.ok),
        "server_answers_by_status": _answers(target),
    }


if __name__ == "__main__":
    sys.exit(main())
