"""`make run`: start the model server on the embedded default and send it demo traffic.

Starts `python -m model_server` as a child process (creating the `digits` model in
./models on first run), sends the digits test split over gRPC from a few concurrent
workers, and prints throughput, latency and live accuracy every few seconds.
Ctrl-C stops the traffic and shuts the server down gracefully.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc


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


async def _wait_ready(
    stub: pb_grpc.GRPCInferenceServiceStub, server: subprocess.Popen[bytes]
) -> None:
    while server.poll() is None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            if (await stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=1)).ready:
                return
        await asyncio.sleep(0.5)
    raise SystemExit(f"model server exited with code {server.returncode}")


async def _worker(
    stub: pb_grpc.GRPCInferenceServiceStub, split: digits.DigitsSplit, offset: int, stats: _Stats
) -> None:
    index = offset
    while True:
        row = split.x_test[index % len(split.x_test) : index % len(split.x_test) + 1]
        request = pb.ModelInferRequest(
            model_name="digits",
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


async def _traffic(address: str, server: subprocess.Popen[bytes], concurrency: int) -> None:
    split = digits.load_split()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await _wait_ready(stub, server)
        print(f"model server ready on {address}; sending demo traffic (Ctrl-C to stop)")
        stats = _Stats()
        workers = [asyncio.create_task(_worker(stub, split, i, stats)) for i in range(concurrency)]
        try:
            while server.poll() is None:
                started = time.perf_counter()
                await asyncio.sleep(5)
                print(stats.report(time.perf_counter() - started), flush=True)
        finally:
            for worker in workers:
                worker.cancel()


def main() -> int:
    """Run the server and traffic until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    args = parser.parse_args()
    port = os.environ.get("MODEL_SERVER_GRPC_PORT", "8001")
    server = subprocess.Popen([sys.executable, "-m", "model_server"])
    try:
        asyncio.run(_traffic(f"127.0.0.1:{port}", server, args.concurrency))
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
