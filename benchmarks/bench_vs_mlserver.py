"""InferWatch against MLServer 1.7.1: the same digits TorchScript model, client and bytes.

Servers (all on this machine, started once, measured interleaved):
- inferwatch: `python -m model_server` with full telemetry: metrics, JSON logs and traces at
  100% sampling exported over OTLP/gRPC to a local receiver (the telemetry benchmark's pieces);
- mlserver-best: MLServer 1.7.1 with `parallel_workers: 0` and adaptive batching (max batch 64,
  2 ms, as InferWatch's digits config), metrics on;
- mlserver-default: MLServer 1.7.1 with its default settings (one parallel worker, no
  batching), metrics on.
MLServer runs the custom runtime in benchmarks/mlserver/ from its own virtualenv,
.venv-mlserver (created here: torch==2.13.0 first, then mlserver==1.7.1 and uvloop<0.22).

Client: `python -m loadgen` (inferwatch-load) in its own process per point, closed loop over
gRPC, one digit per request; the request bytes are encoded once from the test split and are
identical for every server (the runs' payload SHA-256 is checked). Each (server, concurrency)
point is repeated, the servers' order alternating per repeat.

Usage: .venv/bin/python -m benchmarks.bench_vs_mlserver [--concurrency 1 8 32 64]
    [--repeats 3] [--duration 10] [--warmup 2] [--out benchmarks/out/vs_mlserver]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks.bench_telemetry import _start_server, start_receiver
from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
MLSERVER_DIR = REPO_ROOT / "benchmarks" / "mlserver"
MLSERVER_VENV = REPO_ROOT / ".venv-mlserver"
MLSERVER_PACKAGES = ["mlserver==1.7.1", "uvloop<0.22", "matplotlib>=3.8"]
"""uvloop<0.22: MLServer 1.7.1's parallel worker crashes on 0.22 (see shared/STACK_FACTS.md);
matplotlib draws the plot, so it stays out of the project's virtualenv."""
MLSERVER_CONFIGS = ("best", "default")
SERVERS = ("inferwatch", "mlserver-best", "mlserver-default")


@dataclass
class Server:
    """A running server process and its gRPC address."""

    name: str
    process: subprocess.Popen[str]
    address: str


def _ensure_mlserver_venv() -> Path:
    """Create .venv-mlserver once (a marker file records what was installed)."""
    python = MLSERVER_VENV / "bin" / "python"
    marker = MLSERVER_VENV / ".installed"
    wanted = " ".join(["torch==2.13.0", *MLSERVER_PACKAGES])
    if marker.exists() and marker.read_text(encoding="utf-8") == wanted:
        return python
    print(f"creating {MLSERVER_VENV} ({wanted})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the local CPU wheel, first
    subprocess.run([*pip, *MLSERVER_PACKAGES], check=True)
    marker.write_text(wanted, encoding="utf-8")
    return python


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_mlserver(config: str, model_file: Path, workdir: Path, python: Path) -> Server:
    """`mlserver start` on a folder holding this config's settings and the digits model."""
    folder = workdir / f"mlserver-{config}"
    model_dir = folder / digits.MODEL_NAME
    model_dir.mkdir(parents=True)
    shutil.copy(model_file, model_dir / "model.pt")
    shutil.copy(MLSERVER_DIR / config / "model-settings.json", model_dir)
    settings = json.loads((MLSERVER_DIR / config / "settings.json").read_text(encoding="utf-8"))
    grpc_port = _free_port()
    settings.update(
        host="127.0.0.1", http_port=_free_port(), grpc_port=grpc_port, metrics_port=_free_port()
    )
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    log = (workdir / f"mlserver-{config}.log").open("w")
    process = subprocess.Popen(
        [str(python.parent / "mlserver"), "start", str(folder)],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(MLSERVER_DIR)},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Server(f"mlserver-{config}", process, f"127.0.0.1:{grpc_port}")


def _wait_ready(server: Server, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
            try:
                request = pb.ModelReadyRequest(name=digits.MODEL_NAME)
                if stub.ModelReady(request, timeout=2).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"{server.name} not ready after {timeout_s} s")


def _load(server: Server, concurrency: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One point: inferwatch-load in its own process."""
    command = [
        sys.executable,
        *("-m", "loadgen", "--target", f"grpc://{server.address}"),
        *("--concurrency", str(concurrency), "--duration", str(args.duration)),
        *("--warmup", str(args.warmup), "--timeout", "30", "--json", str(out)),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO_ROOT)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def _spread(values: list[float], decimals: int = 0) -> str:
    """`median (min-max)`."""
    median, low, high = (
        f"{value:,.{decimals}f}" for value in (statistics.median(values), min(values), max(values))
    )
    return f"{median} ({low}-{high})"


def _table(points: dict[tuple[str, int], list[dict[str, Any]]], concurrencies: list[int]) -> str:
    rows = [
        "| server | c | req/s median (min-max) | p50 ms median (min-max) | "
        "p99 ms median (min-max) | errors |",
        "|---|---|---|---|---|---|",
    ]
    for concurrency in concurrencies:
        for name in SERVERS:
            runs = points[name, concurrency]
            rows.append(
                f"| {name} | {concurrency} | {_spread([r['ok_rps'] for r in runs])} | "
                f"{_spread([r['latency_ms']['p50'] for r in runs], 2)} | "
                f"{_spread([r['latency_ms']['p99'] for r in runs], 2)} | "
                f"{sum(r['errors'] for r in runs)} |"
            )
    return "\n".join(rows)


def _verdict(points: dict[tuple[str, int], list[dict[str, Any]]]) -> list[str]:
    def median(name: str, concurrency: int, key: str) -> float:
        runs = points.get((name, concurrency))
        if not runs:
            return float("nan")
        return float(
            statistics.median(r["ok_rps"] if key == "rps" else r["latency_ms"][key] for r in runs)
        )

    best_ml = max(median(n, 32, "rps") for n in ("mlserver-best", "mlserver-default"))
    ours = median("inferwatch", 32, "rps")
    ours_p99 = median("inferwatch", 8, "p99")
    best_p99 = min(median(n, 8, "p99") for n in ("mlserver-best", "mlserver-default"))
    return [
        f"c=32 throughput: InferWatch {ours:,.0f} req/s = {ours / best_ml:.2f}x MLServer's best "
        f"({best_ml:,.0f}); target 1.5x: {'met' if ours >= 1.5 * best_ml else 'NOT met'}",
        f"c=8 p99: InferWatch {ours_p99:.2f} ms, MLServer's lower {best_p99:.2f} ms; target <=: "
        f"{'met' if ours_p99 <= best_p99 else 'NOT met'}",
    ]


def _git_revision() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "model_server", "otel", "monitoring", "loadgen"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + ("+dirty" if dirty else "")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per point")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "out" / "vs_mlserver"
    )
    parser.add_argument(
        "--plot", type=Path, default=MLSERVER_DIR / "results.png", help="the PNG written"
    )
    return parser.parse_args()


def main() -> int:
    """Set up, measure every point interleaved, print the table and the verdict, plot."""
    args = _parse_args()
    mlserver_python = _ensure_mlserver_venv()
    args.out.mkdir(parents=True, exist_ok=True)
    revision = _git_revision()
    receiver, receiver_port = start_receiver()
    servers: dict[str, Server] = {}
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repository = workdir / "models"
        accuracy = digits.save_version(repository / digits.MODEL_NAME / "1")
        print(
            f"digits trained (test accuracy {accuracy:.4f}); commit {revision}; "
            f"nproc {os.cpu_count()}",
            flush=True,
        )
        try:
            process, address = _start_server(repository, "full", receiver_port)
            servers["inferwatch"] = Server("inferwatch", process, address)
            for config in MLSERVER_CONFIGS:
                model_file = repository / digits.MODEL_NAME / "1" / "model.pt"
                server = _start_mlserver(config, model_file, workdir, mlserver_python)
                servers[server.name] = server
            for server in servers.values():
                _wait_ready(server)
            digests = set()
            for repeat in range(args.repeats):
                order = SERVERS if repeat % 2 == 0 else tuple(reversed(SERVERS))
                for concurrency in args.concurrency:
                    for name in order:
                        out = args.out / f"{name}-c{concurrency}-r{repeat}.json"
                        result = _load(servers[name], concurrency, args, out)
                        digests.add(result["payload_sha256"])
                        points.setdefault((name, concurrency), []).append(result)
                        latency = result["latency_ms"]
                        print(
                            f"[{repeat + 1}/{args.repeats}] {name:16} c={concurrency:<3} "
                            f"{result['ok_rps']:8,.0f} req/s  p50 {latency['p50']:7.2f} ms  "
                            f"p99 {latency['p99']:7.2f} ms  errors {result['errors']}",
                            flush=True,
                        )
            if len(digests) != 1:
                raise RuntimeError(f"the servers got different payloads: {sorted(digests)}")
        finally:
            for server in servers.values():
                if server.process.poll() is None:
                    server.process.send_signal(signal.SIGTERM)
            for server in servers.values():
                try:
                    server.process.wait(30)
                except subprocess.TimeoutExpired:
                    server.process.kill()
            receiver.terminate()
    table = _table(points, args.concurrency)
    verdict = _verdict(points)
    print(f"\ncommit {revision}; payload sha256 {digests.pop()}\n\n{table}\n")
    print("\n".join(verdict))
    summary = {
        "commit": revision,
        "args": {k: str(v) for k, v in vars(args).items()},
        "points": {f"{name} c={c}": runs for (name, c), runs in points.items()},
    }
    summary_file = args.out / "summary.json"
    summary_file.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    subprocess.run(
        [str(mlserver_python), str(MLSERVER_DIR / "plot.py"), str(summary_file), str(args.plot)],
        check=True,
    )
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
