"""Telemetry outage: the model server under load while its OTLP endpoint is down, black or slow.

Run from the repository root:

    .venv/bin/python benchmarks/bench_outage.py [--requests 20000] [--concurrency 8] [--json PATH]

For each endpoint kind, a fresh model server (digits with batching; traces at 100%, metrics and
logs, all over OTLP/gRPC to that endpoint) answers `--requests` one-row ModelInfer calls from a
closed loop of `--concurrency` grpc.aio clients in this process (8 by default; at 32 the server
is saturated, so what a dropped span costs it shows in the throughput):

- healthy: a receiver that accepts every export and discards it (raw bytes, nothing parsed);
- refused: a loopback port nobody listens on;
- blackholed: a socket that accepts connections and never reads or answers;
- slow: the healthy receiver, but every export waits 2 s for its answer.

Per run: failed inferences, p50/p99, the server's resident memory after a 1,000-request warm-up
and its peak during the run (sampled every 0.25 s), and what its `/metrics` says was lost
(`inferwatch_telemetry_dropped_total`, `inferwatch_telemetry_export_failures_total`).
The healthy kind runs first and last, to show how much the machine drifted meanwhile.
"""

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

KINDS = ("healthy", "refused", "blackholed", "slow", "healthy")
_LISTENING = re.compile(r"gRPC server listening on [^:\s]+:(\d+)")
_OTLP_SERVICES = (
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _receiver(delay_s: float) -> Iterator[str]:
    """An OTLP/gRPC endpoint that answers every export with an empty response after `delay_s`."""

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(delay_s)
        return b""

    handler = grpc.unary_unary_rpc_method_handler(export)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        handlers=[
            grpc.method_handlers_generic_handler(s, {"Export": handler}) for s in _OTLP_SERVICES
        ],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)


@contextmanager
def _blackhole() -> Iterator[str]:
    """A listening socket whose connections are accepted and then ignored."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


@contextmanager
def _endpoint(kind: str) -> Iterator[str]:
    if kind == "refused":
        yield f"http://127.0.0.1:{_free_port()}"
    elif kind == "blackholed":
        with _blackhole() as endpoint:
            yield endpoint
    else:
        with _receiver(2.0 if kind == "slow" else 0.0) as endpoint:
            yield endpoint


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _lost(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        body = answer.read().decode()
    lost: dict[str, float] = {}
    pattern = re.compile(
        r"^(inferwatch_telemetry_(?:dropped|export_failures)_total)\{([^}]*)\} (\S+)$", re.M
    )
    for name, labels, value in pattern.findall(body):
        kept = ",".join(
            label for label in labels.split(",") if label.startswith(("signal", "reason"))
        )
        lost[f"{name}{{{kept}}}"] = lost.get(f"{name}{{{kept}}}", 0) + float(value)
    return {key: value for key, value in sorted(lost.items()) if value}


async def _load(target: str, requests: int, clients: int) -> tuple[list[float], int]:
    request = pb.ModelInferRequest(model_name=digits.MODEL_NAME)
    tensor = request.inputs.add(name="pixels", datatype="FP32")
    tensor.shape.extend([1, digits.N_FEATURES])
    request.raw_input_contents.append(np.zeros((1, digits.N_FEATURES), np.float32).tobytes())
    latencies: list[float] = []
    failed = 0
    remaining = requests
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def client() -> None:
            nonlocal failed, remaining
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=30)
                except grpc.aio.AioRpcError:
                    failed += 1
                    continue
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, failed


def _run(kind: str, repository: Path, requests: int, clients: int) -> dict[str, Any]:
    metrics_port = _free_port()
    with _endpoint(kind) as endpoint:
        env = {
            **os.environ,
            "MODEL_SERVER_METRICS_PORT": str(metrics_port),
            "MODEL_SERVER_LOG_LEVEL": "WARNING",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        command = [sys.executable, "-m", "model_server", "--grpc-port", "0"]
        server = subprocess.Popen(
            [*command, "--model-repository", str(repository)],
            env={**env, "MODEL_SERVER_LOG_LEVEL": "INFO"},
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
            drain = threading.Thread(target=server.stdout.read, daemon=True)
            drain.start()
            asyncio.run(_load(target, 1000, clients))  # warm-up
            rss_start = _rss_mb(server.pid)
            peak = [rss_start]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.25):
                    peak.append(_rss_mb(server.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            began = time.perf_counter()
            latencies, failed = asyncio.run(_load(target, requests, clients))
            elapsed = time.perf_counter() - began
            done.set()
            sampler.join()
            lost = _lost(metrics_port)
        finally:
            server.terminate()
            server.wait(60)
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return {
        "kind": kind,
        "requests": requests,
        "concurrency": clients,
        "failed": failed,
        "req_per_s": requests / elapsed,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "rss_after_warmup_mb": rss_start,
        "rss_peak_mb": max(peak),
        "rss_growth_mb": max(peak) - rss_start,
        "lost": lost,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        repository = Path(workdir) / "models"
        digits.ensure_default_model(repository)
        for kind in KINDS:
            result = _run(kind, repository, args.requests, args.concurrency)
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
