"""`make run`: the model server, the REST gateway in front of it, and demo traffic through both.

Starts `python -m model_server` (creating the `digits` model in ./models on first run) and
`python -m gateway` as child processes, then sends the digits test split from a few
concurrent workers: half over gRPC straight to the model server, half as REST JSON through
the gateway. Prints where to look (metrics endpoints, the API docs, a trace id to paste into
Grafana), then throughput, latency and live accuracy per path every few seconds. Ctrl-C stops
the traffic and shuts both servers down gracefully.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc

MODEL = "digits"


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.correct = 0
        self.errors = 0

    def report(self, elapsed_s: float) -> str:
        """One line about the requests since the last report; starts a new window."""
        line = self._line(elapsed_s)
        self.latencies, self.correct, self.errors = [], 0, 0
        return line

    def _line(self, elapsed_s: float) -> str:
        done = len(self.latencies)
        if not done:
            return f"{self.errors} errors, no successful request yet"
        p50, p99 = np.percentile(self.latencies, [50, 99]) * 1000
        return (
            f"{done / elapsed_s:7.0f} req/s  p50 {p50:5.2f} ms  p99 {p99:5.2f} ms  "
            f"accuracy {self.correct / done:.3f}  errors {self.errors}"
        )


@dataclass(frozen=True)
class _Endpoints:
    grpc_address: str
    gateway_host: str
    gateway_port: int
    server_metrics_port: str
    gateway_metrics_port: str


class _Rest:
    """One keep-alive HTTP connection to the gateway (stdlib; used from a worker thread). After
    a failure `close()` it: the next request connects again."""

    def __init__(self, host: str, port: int) -> None:
        self._connection = http.client.HTTPConnection(host, port, timeout=5)

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body)."""
        self._connection.request(
            method, path, body=body, headers={"Content-Type": "application/json"}
        )
        response = self._connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def close(self) -> None:
        """Closes the connection."""
        self._connection.close()


def _rest_body(row: np.ndarray) -> bytes:
    tensor = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row.ravel().tolist()}
    return json.dumps({"inputs": [tensor], "outputs": [{"name": "label"}]}).encode()


async def _wait_ready(
    stub: pb_grpc.GRPCInferenceServiceStub,
    rest: _Rest,
    children: list[subprocess.Popen[bytes]],
) -> None:
    def running() -> None:
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"{child.args!r} exited with code {child.returncode}")

    while True:
        running()
        with contextlib.suppress(grpc.aio.AioRpcError):
            if (await stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=1)).ready:
                break
        await asyncio.sleep(0.5)
    while True:
        running()
        try:
            status, _, _ = await asyncio.to_thread(rest.request, "GET", f"/v2/models/{MODEL}/ready")
        except (OSError, http.client.HTTPException):
            rest.close()
        else:
            if status == 200:
                return
        await asyncio.sleep(0.5)


async def _grpc_worker(
    stub: pb_grpc.GRPCInferenceServiceStub, split: digits.DigitsSplit, offset: int, stats: _Stats
) -> None:
    index = offset
    while True:
        row = split.x_test[index % len(split.x_test) : index % len(split.x_test) + 1]
        request = pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 64])
            ],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="label")],
            raw_input_contents=[row.tobytes()],
        )
        started = time.perf_counter()
        try:
            response = await stub.ModelInfer(request, timeout=5)
        except grpc.aio.AioRpcError:
            stats.errors += 1
        else:
            stats.latencies.append(time.perf_counter() - started)
            label = int(np.frombuffer(response.raw_output_contents[0], dtype="<i8")[0])
            stats.correct += label == split.y_test[index % len(split.y_test)]
        index += 7


async def _rest_worker(
    endpoints: _Endpoints, split: digits.DigitsSplit, offset: int, stats: _Stats
) -> None:
    rest = _Rest(endpoints.gateway_host, endpoints.gateway_port)
    index = offset
    try:
        while True:
            row = split.x_test[index % len(split.x_test)]
            started = time.perf_counter()
            try:
                status, _, body = await asyncio.to_thread(
                    rest.request, "POST", f"/v2/models/{MODEL}/infer", _rest_body(row)
                )
            except (OSError, http.client.HTTPException):
                rest.close()
                status, body = 0, b""
            if status != 200:
                stats.errors += 1
            else:
                stats.latencies.append(time.perf_counter() - started)
                label = json.loads(body)["outputs"][0]["data"][0]
                stats.correct += label == split.y_test[index % len(split.y_test)]
            index += 7
    finally:
        rest.close()


async def _where_to_look(endpoints: _Endpoints, split: digits.DigitsSplit) -> None:
    rest = _Rest(endpoints.gateway_host, endpoints.gateway_port)
    try:
        _, headers, _ = await asyncio.to_thread(
            rest.request, "POST", f"/v2/models/{MODEL}/infer", _rest_body(split.x_test[0])
        )
    finally:
        rest.close()
    gateway = f"http://{endpoints.gateway_host}:{endpoints.gateway_port}"
    print(
        "\nmodel server  gRPC      " + endpoints.grpc_address,
        f"              metrics   http://127.0.0.1:{endpoints.server_metrics_port}/metrics",
        f"gateway       REST      {gateway}/v2/models/{MODEL}/infer  (API docs: {gateway}/docs)",
        f"              metrics   http://127.0.0.1:{endpoints.gateway_metrics_port}/metrics",
        f"example trace id (x-trace-id of a REST answer; paste it into Grafana's trace search): "
        f"{headers.get('x-trace-id', '(telemetry off)')}",
        *(
            []
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            else ["(traces are exported once OTEL_EXPORTER_OTLP_ENDPOINT points at a collector)"]
        ),
        "sending demo traffic: half over gRPC, half through the gateway (Ctrl-C to stop)\n",
        sep="\n",
        flush=True,
    )


#: Input shifts the demo can switch on, so drift dashboards and alerts can be seen firing.
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda pixels: pixels,
    "noise": lambda pixels: np.clip(
        pixels + np.random.default_rng(0).normal(0.0, 4.0, pixels.shape), 0, 16
    ).astype(np.float32),
    "brightness": lambda pixels: np.clip(pixels + 4.0, 0, 16).astype(np.float32),
    "invert": lambda pixels: (16.0 - pixels).astype(np.float32),
}


async def _drift_line(channel: grpc.aio.Channel) -> str:
    stub = mon_grpc.ModelMonitoringStub(channel)
    try:
        answer = await stub.ModelDrift(mon_pb.ModelDriftRequest(name=MODEL), timeout=5)
    except grpc.aio.AioRpcError as error:
        return f"drift    unavailable: {error.details()}"
    report = json.loads(answer.report_json)
    return (
        f"drift    {report['status']}  score {report['score']:.2f}  "
        f"drifted features {report['drifted_features']}  window {report['window']['rows']} rows"
    )


async def _traffic(
    endpoints: _Endpoints, children: list[subprocess.Popen[bytes]], concurrency: int, shift: str
) -> None:
    clean = digits.load_split()
    split = dataclasses.replace(clean, x_test=SHIFTS[shift](clean.x_test))
    async with grpc.aio.insecure_channel(endpoints.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        probe = _Rest(endpoints.gateway_host, endpoints.gateway_port)
        try:
            await _wait_ready(stub, probe, children)
        finally:
            probe.close()
        await _where_to_look(endpoints, split)
        grpc_stats, rest_stats = _Stats(), _Stats()
        workers = [
            asyncio.create_task(_grpc_worker(stub, split, i, grpc_stats))
            for i in range(max(1, concurrency // 2))
        ] + [
            asyncio.create_task(_rest_worker(endpoints, split, i, rest_stats))
            for i in range(max(1, concurrency - concurrency // 2))
        ]
        try:
            while all(child.poll() is None for child in children):
                started = time.perf_counter()
                await asyncio.sleep(5)
                elapsed = time.perf_counter() - started
                print(f"gRPC     {grpc_stats.report(elapsed)}", flush=True)
                print(f"gateway  {rest_stats.report(elapsed)}", flush=True)
                print(await _drift_line(channel), flush=True)
        finally:
            for worker in workers:
                worker.cancel()


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(30)
    if child.poll() is None:
        child.kill()


def main() -> int:
    """Run the model server, the gateway and the traffic until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients in all")
    parser.add_argument(
        "--drift",
        choices=sorted(SHIFTS),
        default="none",
        help="shift the inputs (gaussian noise, brightness +4, inverted pixels) to see drift fire",
    )
    args = parser.parse_args()
    grpc_port = os.environ.get("MODEL_SERVER_GRPC_PORT", "8001")
    endpoints = _Endpoints(
        grpc_address=f"127.0.0.1:{grpc_port}",
        gateway_host="127.0.0.1",
        gateway_port=int(os.environ.get("GATEWAY_PORT", "8000")),
        server_metrics_port=os.environ.get("MODEL_SERVER_METRICS_PORT", "9464"),
        gateway_metrics_port=os.environ.get("GATEWAY_METRICS_PORT", "9465"),
    )
    server = subprocess.Popen([sys.executable, "-m", "model_server"])
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--backend", endpoints.grpc_address]
    )
    try:
        asyncio.run(_traffic(endpoints, [server, gateway], args.concurrency, args.drift))
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        _stop(gateway)
        _stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
