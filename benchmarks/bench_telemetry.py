"""What telemetry costs the model server: throughput and p99 with it off, metrics only, and full.

Modes (the same model server, digits model with batching, one process each, interleaved):
- off: MODEL_SERVER_TELEMETRY_ENABLED=false (no providers: the API is a no-op);
- metrics: metrics and the /metrics endpoint, traces sampled off (OTEL_TRACES_SAMPLER=always_off);
- full: metrics, logs and traces at 100% sampling, exported over OTLP/gRPC to a local receiver
  that accepts and discards every export.

With `--baseline-src DIR` (a snapshot of another commit: `git archive <commit> model_server otel
monitoring | tar -x -C DIR`) a fourth server, "full-baseline", runs that code with full
telemetry, interleaved with the others: a before/after comparison on the same machine state.
Each round runs "full" and "full-baseline" back to back, and a last table compares them pair by
pair. On a noisy VM a change of a few percent needs many short pairs: for instance
`--modes full --repeats 30 --duration 3` runs only those two servers.

The load generator runs in this process (grpc.aio, closed loop, one-row requests), the OTLP
receiver in a process of its own. The table
gives each mode against telemetry off twice: as the ratio of the medians, and as the median of
each round's ratio (a round runs every mode once, back to back, so a VM whose speed drifts over
minutes moves both sides of that ratio alike), and the CPU time the server's main thread (the
event loop that serves every call) spent per request, read from /proc (Linux).
Usage: python benchmarks/bench_telemetry.py [--duration 6] [--repeats 2] [--concurrency 8 32]
    [--modes off metrics full] [--baseline-src DIR]
"""

import argparse
import asyncio
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import numpy as np
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

MODES = ("off", "metrics", "full")
BASELINE = "full-baseline"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_LISTENING = re.compile(r"gRPC server listening on [^:\s]+:(\d+)")


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request: object, context: object) -> object:  # noqa: N802
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request: object, context: object) -> object:  # noqa: N802
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request: object, context: object) -> object:  # noqa: N802
        return logs_service_pb2.ExportLogsServiceResponse()


def _discarding_receiver() -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(), server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(), server)  # type: ignore[no-untyped-call]
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _serve_receiver(port_pipe: Connection) -> None:
    server, port = _discarding_receiver()
    port_pipe.send(port)
    server.wait_for_termination()


def start_receiver() -> tuple[multiprocessing.process.BaseProcess, int]:
    """The discarding OTLP receiver in a process of its own, as a Collector would be: in the
    load generator's process its parsing would take the GIL the client needs. Returns the
    process (terminate it when done) and its port."""
    spawn = multiprocessing.get_context("spawn")  # no copy of this process's grpc state
    port_pipe, child_pipe = spawn.Pipe()
    process = spawn.Process(target=_serve_receiver, args=(child_pipe,), daemon=True)
    process.start()
    if not port_pipe.poll(60):
        process.terminate()
        raise RuntimeError("the OTLP receiver did not start")
    return process, int(port_pipe.recv())


def _environment(mode: str, receiver_port: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MODEL_SERVER_METRICS_PORT": "0"}
    env["MODEL_SERVER_CREATE_DEFAULT_MODEL"] = "false"
    if mode == "off":
        env["MODEL_SERVER_TELEMETRY_ENABLED"] = "false"
    elif mode == "metrics":
        env["OTEL_TRACES_SAMPLER"] = "always_off"
    else:
        env["OTEL_TRACES_SAMPLER"] = "always_on"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver_port}"
    return env


def _start_server(
    repository: Path, mode: str, receiver_port: int, src: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """The model server of `mode` (from `src`, a snapshot of another commit, when given)."""
    env = _environment(mode, receiver_port)
    if src is not None:  # its own packages first; cwd too, since `-m` puts the cwd on sys.path
        env["PYTHONPATH"] = str(src)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model_server",
            "--grpc-port",
            "0",
            "--model-repository",
            str(repository),
        ],
        env=env,
        cwd=src,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    port = 0
    for line in process.stdout:
        match = _LISTENING.search(line)
        if match:
            port = int(match.group(1))
        if "server ready with models" in line:
            break
    if not port:
        raise RuntimeError(f"model server ({mode}) did not start")
    # Keep draining its output so it never blocks on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process, f"127.0.0.1:{port}"


async def _load(
    address: str, concurrency: int, duration_s: float
) -> tuple[float, float, float, int]:
    """req/s, p50 ms and p99 ms after a 1 s warm-up, and every call answered, warm-up included."""
    row = digits.load_split().x_test[:1]
    request = pb.ModelInferRequest(
        model_name="digits",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 64])
        ],
        raw_input_contents=[row.tobytes()],
    )
    latencies: list[float] = []
    warmup_calls = [0] * concurrency
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        warmup_end = time.perf_counter() + 1.0
        end = warmup_end + duration_s

        async def worker(index: int) -> None:
            while (now := time.perf_counter()) < end:
                await stub.ModelInfer(request)
                if now >= warmup_end:
                    latencies.append(time.perf_counter() - now)
                else:
                    warmup_calls[index] += 1

        await asyncio.gather(*(worker(index) for index in range(concurrency)))
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return len(latencies) / duration_s, float(p50), float(p99), len(latencies) + sum(warmup_calls)


def _main_thread_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process's main thread has used; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


Point = tuple[float, float, float, float | None]
"""req/s, p50 ms, p99 ms, main-thread CPU µs per request (None when unknown)."""


def _measure(server: tuple[subprocess.Popen[str], str], concurrency: int, duration: float) -> Point:
    process, address = server
    before = _main_thread_cpu_s(process.pid)
    rate, p50, p99, answered = asyncio.run(_load(address, concurrency, duration))
    after = _main_thread_cpu_s(process.pid)
    cpu = None
    if before is not None and after is not None and answered:
        cpu = (after - before) / answered * 1e6
    return rate, p50, p99, cpu


def _cpu(points: list[Point]) -> str:
    known = [point[3] for point in points if point[3] is not None]
    return f"{statistics.median(known):.0f}" if known else "-"


def _print_pairs(results: dict[tuple[str, int], list[Point]], concurrencies: list[int]) -> None:
    print("\nfull against full-baseline, round by round (each round ran the two back to back):\n")
    print(
        "| c | rounds | full ahead | req/s ratio: median | p99 ratio: median (full lower) "
        "| main-thread CPU ratio: median (full lower) |"
    )
    print("|---|---|---|---|---|---|")
    for concurrency in concurrencies:
        pairs = list(
            zip(results[("full", concurrency)], results[(BASELINE, concurrency)], strict=True)
        )
        rates = [new[0] / old[0] for new, old in pairs]
        tails = [new[2] / old[2] for new, old in pairs]
        cpus = [new[3] / old[3] for new, old in pairs if new[3] and old[3]]
        cpu = (
            f"{statistics.median(cpus):.3f} ({sum(r < 1 for r in cpus)} of {len(cpus)})"
            if cpus
            else "-"
        )
        print(
            f"| {concurrency} | {len(pairs)} | {sum(r > 1 for r in rates)} | "
            f"{statistics.median(rates):.3f} | "
            f"{statistics.median(tails):.3f} ({sum(r < 1 for r in tails)}) | {cpu} |"
        )


def main() -> None:
    """Run every mode at every concurrency, interleaved, and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per point")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="the servers to run"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="a snapshot of another commit, run with full telemetry as 'full-baseline'",
    )
    args = parser.parse_args()
    if args.baseline_src and "full" not in args.modes:
        parser.error("--baseline-src compares against full: keep full in --modes")
    modes = (*args.modes, BASELINE) if args.baseline_src else tuple(args.modes)
    receiver, receiver_port = start_receiver()
    results: dict[tuple[str, int], list[Point]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        repository = Path(workdir) / "models"
        accuracy = digits.save_version(repository / "digits" / "1")
        print(f"digits trained (test accuracy {accuracy:.4f}); nproc={os.cpu_count()}")
        servers = {mode: _start_server(repository, mode, receiver_port) for mode in args.modes}
        if args.baseline_src:
            servers[BASELINE] = _start_server(
                repository, "full", receiver_port, args.baseline_src.resolve()
            )
        try:
            for repeat in range(args.repeats):
                for concurrency in args.concurrency:
                    for mode in modes if repeat % 2 == 0 else reversed(modes):
                        point = _measure(servers[mode], concurrency, args.duration)
                        results.setdefault((mode, concurrency), []).append(point)
                        cpu = "-" if point[3] is None else f"{point[3]:.0f}"
                        print(
                            f"[{repeat + 1}] {mode:13} c={concurrency:<3} {point[0]:7.0f} req/s "
                            f"p50 {point[1]:6.2f} ms p99 {point[2]:6.2f} ms "
                            f"main thread {cpu} µs/req",
                            flush=True,
                        )
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(30)
            receiver.terminate()
    print(
        "\n| mode | c | req/s (median) | runs | p50 ms | p99 ms | main-thread CPU µs/req "
        "| vs off | vs off in the same round: median (each) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for concurrency in args.concurrency:
        off = [r[0] for r in results.get(("off", concurrency), [])]
        for mode in modes:
            runs = results[(mode, concurrency)]
            rate = statistics.median(r[0] for r in runs)
            versus, rounds = "-", "-"
            if off:
                versus = f"{rate / statistics.median(off):.0%}"
                # The VM's speed drifts between rounds; a round's modes ran minutes apart at most.
                each = [run[0] / off_rate for run, off_rate in zip(runs, off, strict=True)]
                rounds = f"{statistics.median(each):.0%} ({', '.join(f'{r:.0%}' for r in each)})"
            print(
                f"| {mode} | {concurrency} | {rate:,.0f} | "
                f"{', '.join(f'{r[0]:,.0f}' for r in runs)} | "
                f"{statistics.median(r[1] for r in runs):.2f} | "
                f"{statistics.median(r[2] for r in runs):.2f} | {_cpu(runs)} | {versus} | "
                f"{rounds} |"
            )
    if args.baseline_src:
        _print_pairs(results, args.concurrency)


if __name__ == "__main__":
    main()
