"""Added latency of the REST gateway over direct gRPC, to the same model server.

Run from the repository root:

    .venv/bin/python benchmarks/bench_gateway.py [--duration S] [--warmup S] [--repeats N]
        [--concurrency 1,8] [--json PATH]

What runs, each in its own process: `python -m model_server` on a freshly trained `digits`
(default config: batching on, max queue delay 2 ms), `python -m gateway` in front of it, and
this load generator. Both servers run with their telemetry on (spans, metrics, /metrics), no
OTLP exporter. Every path sends the same single row (one 8x8 digit, FP32 [1, 64]), closed loop,
C workers:

* `grpc`: grpc.aio, one channel, the row as raw bytes (what a gRPC client sends);
* `rest`: C keep-alive HTTP/1.1 connections from a minimal asyncio client (one write per
  request, the answer read by Content-Length), the row as JSON: the gateway's own cost;
* `rest-aiohttp`: the same through aiohttp, a typical Python HTTP client, whose own CPU time
  is part of what a Python caller sees.

Points are interleaved (each repeat walks every path at every concurrency, in a rotated order)
and each result is the median over the repeats, so slow drift of a shared machine does not
favour one path. Added latency = a REST path's percentile minus gRPC's. Besides latency, each
point records the CPU time per request of the gateway and of the model server, and, from the
gateway's /metrics, its mean HTTP server duration and mean upstream ModelInfer duration: their
difference is the time spent in the gateway itself.

Last, the cost per request of the HTTP instrumentation choices, in-process with a stub model
server (no network): none, the gateway's TelemetryMiddleware, FastAPI's native OpenTelemetry
instrumentation, and opentelemetry-instrumentation-fastapi when it is importable.
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

PATHS = ("grpc", "rest", "rest-aiohttp")
ROW = np.zeros((1, 64), np.float32)
INFER = "/v2/models/digits/infer"
INFER_ROUTE = "/v2/models/{model_name}/infer"
GRPC_REQUEST = pb.ModelInferRequest(
    model_name="digits",
    inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 64])],
    raw_input_contents=[ROW.tobytes()],
)
REST_BODY = json.dumps(
    {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW[0].tolist()}]}
).encode()
TICKS_PER_S = os.sysconf("SC_CLK_TCK")

Send = Callable[[], Awaitable[None]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


@dataclass
class Servers:
    """The model server and the gateway, as child processes."""

    model_server: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    grpc_address: str
    gateway_port: int
    gateway_metrics_port: int


@contextmanager
def servers(workdir: Path) -> Iterator[Servers]:
    """Starts both servers (the model server trains digits first) and stops them at exit."""
    grpc_port, gateway_port, metrics_port = _free_port(), _free_port(), _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    model_server = subprocess.Popen(
        [sys.executable, "-m", "model_server", "--grpc-port", str(grpc_port)],
        cwd=workdir,
        env={**os.environ, "MODEL_SERVER_METRICS_PORT": "0"},
        **quiet,  # type: ignore[call-overload]
    )
    gateway = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway"),
            *("--port", str(gateway_port), "--backend", f"127.0.0.1:{grpc_port}"),
        ],
        cwd=workdir,
        env={**os.environ, "GATEWAY_METRICS_PORT": str(metrics_port)},
        **quiet,  # type: ignore[call-overload]
    )
    try:
        yield Servers(model_server, gateway, f"127.0.0.1:{grpc_port}", gateway_port, metrics_port)
    finally:
        for process in (gateway, model_server):
            process.terminate()
            process.wait(30)


async def _wait_ready(servers: Servers) -> None:
    deadline = time.monotonic() + 180
    async with grpc.aio.insecure_channel(servers.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                if (await stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=1)).ready:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{servers.gateway_port}/v2/models/digits/ready"
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit("the servers did not become ready")


class MinimalHttp:
    """One keep-alive HTTP/1.1 connection; POSTs the REST body, reads the answer."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._request = (
            f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(REST_BODY)}\r\n\r\n"
        ).encode() + REST_BODY
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self) -> None:
        """One request; raises unless the answer is 200."""
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._streams
        writer.write(self._request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())

    def close(self) -> None:
        """Closes the connection."""
        if self._streams is not None:
            self._streams[1].close()


@dataclass
class Point:
    """One path at one concurrency in one repeat."""

    path: str
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    gateway_us_per_request: float
    model_server_us_per_request: float
    gateway_http_mean_ms: float
    gateway_upstream_mean_ms: float


def _gateway_sums(port: int) -> dict[str, float]:
    """Sums and counts of the gateway's infer HTTP duration and upstream ModelInfer duration."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("http_route") == INFER_ROUTE or labels.get("rpc_method") == "ModelInfer":
                kind = "http" if "http_route" in labels else "upstream"
                for suffix in ("_sum", "_count"):
                    if sample.name.endswith(suffix):
                        sums[kind + suffix] = sums.get(kind + suffix, 0.0) + sample.value
    return sums


async def _measure(
    servers: Servers, path: str, concurrency: int, warmup_s: float, duration_s: float
) -> Point:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + warmup_s + duration_s
    measure_from = time.perf_counter() + warmup_s
    closers: list[Callable[[], Awaitable[None] | None]] = []

    async def worker(send: Send) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < stop:
            try:
                await send()
            except (grpc.aio.AioRpcError, RuntimeError, OSError, aiohttp.ClientError):
                errors += 1
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)

    senders: list[Send] = []
    channel = grpc.aio.insecure_channel(servers.grpc_address)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
    closers += [channel.close, session.close]
    if path == "grpc":
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def grpc_send() -> None:
            await stub.ModelInfer(GRPC_REQUEST, timeout=10)

        senders = [grpc_send] * concurrency
    elif path == "rest":
        connections = [MinimalHttp(servers.gateway_port) for _ in range(concurrency)]
        closers += [c.close for c in connections]
        senders = [c.send for c in connections]
    else:
        url = f"http://127.0.0.1:{servers.gateway_port}{INFER}"
        headers = {"Content-Type": "application/json"}

        async def aiohttp_send() -> None:
            async with session.post(url, data=REST_BODY, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"HTTP {answer.status}")

        senders = [aiohttp_send] * concurrency
    running = asyncio.ensure_future(asyncio.gather(*(worker(send) for send in senders)))
    await asyncio.sleep(warmup_s)
    sums_before = _gateway_sums(servers.gateway_metrics_port)
    cpu_before = (_cpu_s(servers.gateway.pid), _cpu_s(servers.model_server.pid))
    await running
    cpu_after = (_cpu_s(servers.gateway.pid), _cpu_s(servers.model_server.pid))
    sums_after = _gateway_sums(servers.gateway_metrics_port)
    for close in closers:
        result = close()
        if result is not None:
            await result
    done = len(latencies) + errors
    delta = {key: sums_after.get(key, 0.0) - sums_before.get(key, 0.0) for key in sums_after}

    def mean_ms(kind: str) -> float:
        count = delta.get(f"{kind}_count", 0.0)
        return delta.get(f"{kind}_sum", 0.0) / count * 1000 if count else float("nan")

    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (np.nan, np.nan)
    return Point(
        path=path,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        p50_ms=float(p50),
        p99_ms=float(p99),
        gateway_us_per_request=(cpu_after[0] - cpu_before[0]) / max(done, 1) * 1e6,
        model_server_us_per_request=(cpu_after[1] - cpu_before[1]) / max(done, 1) * 1e6,
        gateway_http_mean_ms=mean_ms("http"),
        gateway_upstream_mean_ms=mean_ms("upstream"),
    )


async def _run_points(servers: Servers, args: argparse.Namespace) -> list[Point]:
    await _wait_ready(servers)
    points = []
    for repeat in range(args.repeats):
        for concurrency in args.concurrency:
            order = PATHS[repeat % len(PATHS) :] + PATHS[: repeat % len(PATHS)]
            for path in order:
                point = await _measure(servers, path, concurrency, args.warmup, args.duration)
                print(
                    f"  repeat {repeat + 1} c={concurrency:<2} {path:<12} p50 {point.p50_ms:6.2f}"
                    f" p99 {point.p99_ms:6.2f} ms  ({point.requests} requests)",
                    flush=True,
                )
                points.append(point)
    return points


def _median(points: list[Point], path: str, concurrency: int, field: str) -> float:
    values: list[float] = [
        getattr(p, field) for p in points if p.path == path and p.concurrency == concurrency
    ]
    return statistics.median(values)


def instrumentation_costs(requests: int, repeats: int) -> dict[str, float]:
    """Median µs per inference request per instrumentation choice, each in a fresh process
    (the OpenTelemetry providers are global) running `--probe VARIANT`."""
    costs = {}
    for variant in PROBES:
        run = subprocess.run(
            [
                *(sys.executable, __file__, "--probe", variant),
                *("--probe-requests", str(requests), "--repeats", str(repeats)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode == 0:
            costs[variant] = float(run.stdout.strip().splitlines()[-1])
        else:
            print(f"  {variant}: not measured ({run.stderr.strip().splitlines()[-1]})")
    return costs


PROBES = ("none", "TelemetryMiddleware", "fastapi-native", "otel-contrib")


def probe(variant: str, requests: int, repeats: int) -> float:
    """Median µs per inference request through the ASGI app, in this process, with an SDK
    tracer and meter provider (no exporter) and a stub model server answering at once."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    import gateway.app as gateway_app
    from gateway import upstream
    from gateway.settings import GatewaySettings

    answer = pb.ModelInferResponse(
        model_name="digits",
        model_version="1",
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(name="label", datatype="INT64", shape=[1])
        ],
        raw_output_contents=[np.zeros(1, np.int64).tobytes()],
    )

    class Stub:
        async def ModelInfer(  # noqa: N802 (the protocol's name)
            self, request: pb.ModelInferRequest, **_: object
        ) -> pb.ModelInferResponse:
            return answer

    upstream.Backend.stub = property(lambda self: Stub())  # type: ignore[method-assign,assignment]
    if variant == "fastapi-native":
        gateway_app._NO_NATIVE_TELEMETRY = {}
    app: Any = gateway_app.create_app(GatewaySettings())
    if variant != "TelemetryMiddleware":
        app = app.app  # the FastAPI app inside the middleware
    if variant == "otel-contrib":
        from opentelemetry.instrumentation.fastapi import (  # type: ignore[import-not-found]
            FastAPIInstrumentor,
        )

        FastAPIInstrumentor.instrument_app(app, exclude_spans=["send", "receive"])
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(REST_BODY)).encode()),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": INFER,
            "raw_path": INFER.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        incoming = [{"type": "http.request", "body": REST_BODY, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop() if incoming else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def measure() -> float:
        for _ in range(500):
            await call()
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(requests):
                await call()
            runs.append((time.perf_counter() - started) / requests * 1e6)
        return statistics.median(runs)

    return asyncio.run(measure())


def _machine() -> dict[str, object]:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    versions = {}
    for package in ("grpcio", "protobuf", "fastapi", "starlette", "uvicorn", "uvloop", "httptools"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        **versions,
    }


def main() -> int:
    """Run the benchmark; print the tables; write the raw points as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per point")
    parser.add_argument("--repeats", type=int, default=3, help="walks over every point")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(c) for c in text.split(",")],
        default=[1, 8],
        help="comma-separated concurrencies",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/gateway.json"))
    parser.add_argument("--probe", choices=PROBES, help=argparse.SUPPRESS)
    parser.add_argument("--probe-requests", type=int, default=3000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(probe(args.probe, args.probe_requests, args.repeats))
        return 0

    machine = _machine()
    print("machine:", machine, flush=True)
    with tempfile.TemporaryDirectory() as workdir, servers(Path(workdir)) as running:
        points = asyncio.run(_run_points(running, args))
    print("instrumentation cost per request (in-process, stub model server):", flush=True)
    instrumentation = instrumentation_costs(requests=3000, repeats=max(args.repeats, 5))

    print(
        "\n| concurrency | path | p50 ms | p99 ms | added p50 ms | added p99 ms |"
        " gateway CPU µs/req | gateway own ms (HTTP - upstream) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for concurrency in args.concurrency:
        base = {q: _median(points, "grpc", concurrency, f"{q}_ms") for q in ("p50", "p99")}
        for path in PATHS:
            p50 = _median(points, path, concurrency, "p50_ms")
            p99 = _median(points, path, concurrency, "p99_ms")
            added = "" if path == "grpc" else f"{p50 - base['p50']:+.2f} | {p99 - base['p99']:+.2f}"
            own = (
                _median(points, path, concurrency, "gateway_http_mean_ms")
                - _median(points, path, concurrency, "gateway_upstream_mean_ms")
                if path != "grpc"
                else float("nan")
            )
            cpu = _median(points, path, concurrency, "gateway_us_per_request")
            print(
                f"| {concurrency} | {path} | {p50:.2f} | {p99:.2f} | "
                f"{added or ' | '} | {cpu:.0f} | {own:.2f} |"
            )
    print("\n| HTTP instrumentation | µs per request | added by the instrumentation |")
    print("|---|---|---|")
    for variant, cost in instrumentation.items():
        print(f"| {variant} | {cost:.0f} | {cost - instrumentation['none']:+.0f} |")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": machine,
                "args": {k: v for k, v in vars(args).items() if k != "json"},
                "points": [asdict(point) for point in points],
                "instrumentation_us": instrumentation,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nraw points: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
