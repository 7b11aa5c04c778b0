"""`make run`: the model server, the REST gateway, Prometheus and Alertmanager, and demo traffic.

Starts `python -m model_server` (creating the `digits` model in ./models on first run) and
`python -m gateway` as child processes, and a local Prometheus scraping both and an
Alertmanager when their binaries are installed (`apt-get install prometheus
prometheus-alertmanager`; `--no-monitoring` skips them). Every child logs to a file in a fresh
run directory (`runs/<time>/`), where the Prometheus configuration is written too. Then the
digits test split is sent at a steady rate over gRPC straight to the model server and as REST
JSON through the gateway (`inferwatch-load` does the sending), and for a share of the answers
the true label comes back later (the Feedback RPC on the gRPC path, the gateway's feedback route
on the other). Prometheus evaluates the shipped alert rules. Prints where to look (metrics,
Prometheus, an example trace id and the command that finds its log lines), then throughput,
latency, accuracy, labels and the drift verdict every 5 s. Ctrl-C (or SIGTERM, or `--duration`)
stops the traffic and every child, gracefully, and exits 0.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc

from loadgen import payloads
from loadgen.feedback import Labeller, LabelPlan
from loadgen.recorder import Recorder, percentiles_ms
from loadgen.runner import Plan, Run
from loadgen.shifts import SHIFTS
from loadgen.transports import GrpcTransport, HttpTransport, Transport, new_traceparent
from model_server import digits
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc

MODEL = digits.MODEL_NAME
RULES = (
    Path(__file__).resolve().parents[1] / "monitoring/stack/prometheus/rules/inferwatch.rules.yml"
)
"""The shipped alert rules (generated from monitoring/alerts/rules.py)."""
STATUS_EVERY_S = 5.0
READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Ports:
    """Where everything listens (127.0.0.1); the services' own variables are honoured."""

    grpc: int
    gateway: int
    server_metrics: int
    gateway_metrics: int
    prometheus: int
    alertmanager: int


class Child:
    """A child process in its own session (Ctrl-C reaches only the demo, which stops the
    children in order), logging to `<run dir>/<name>.log`."""

    def __init__(self, name: str, argv: list[str], run_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = run_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def running(self) -> bool:
        """Whether it has not exited."""
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, up to 30 s to finish, then SIGKILL."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _prometheus_config(ports: Ports) -> str:
    def job(name: str, port: int) -> str:
        return f'  - job_name: {name}\n    static_configs:\n      - targets: ["127.0.0.1:{port}"]\n'

    return (
        "# Written by `make run` (model_server/demo.py) for this run only.\n"
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        f"rule_files:\n  - {json.dumps(str(RULES))}\n"
        "alerting:\n  alertmanagers:\n    - static_configs:\n"
        f'        - targets: ["127.0.0.1:{ports.alertmanager}"]\n'
        "scrape_configs:\n"
        + job("inferwatch-model-server", ports.server_metrics)
        + job("inferwatch-gateway", ports.gateway_metrics)
    )


_ALERTMANAGER_CONFIG = (
    "# Written by `make run` (model_server/demo.py): alerts are shown, not sent anywhere.\n"
    "route:\n  receiver: demo\nreceivers:\n  - name: demo\n"
)


def _binary(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


def _start(run_dir: Path, ports: Ports, monitoring: bool, children: list[Child]) -> None:
    """Start the children, appending each to `children` as soon as it runs."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("GATEWAY_ACCESS_LOG", "true")  # one line per request, with its trace id
    children.append(
        Child(
            "model-server",
            [sys.executable, "-m", "model_server", "--grpc-port", str(ports.grpc)],
            run_dir,
            {**env, "MODEL_SERVER_METRICS_PORT": str(ports.server_metrics)},
        )
    )
    backend = f"127.0.0.1:{ports.grpc}"
    children.append(
        Child(
            "gateway",
            [sys.executable, "-m", "gateway", "--port", str(ports.gateway), "--backend", backend],
            run_dir,
            {**env, "GATEWAY_METRICS_PORT": str(ports.gateway_metrics)},
        )
    )
    prometheus = _binary("prometheus")
    alertmanager = _binary("prometheus-alertmanager", "alertmanager")
    if monitoring and prometheus:
        (run_dir / "prometheus.yml").write_text(_prometheus_config(ports), encoding="utf-8")
        argv = [
            prometheus,
            f"--config.file={run_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={run_dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{ports.prometheus}",
            "--enable-feature=exemplar-storage",
        ]
        children.append(Child("prometheus", argv, run_dir, env))
    if monitoring and alertmanager:
        (run_dir / "alertmanager.yml").write_text(_ALERTMANAGER_CONFIG, encoding="utf-8")
        argv = [
            alertmanager,
            f"--config.file={run_dir / 'alertmanager.yml'}",
            f"--storage.path={run_dir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{ports.alertmanager}",
            "--cluster.listen-address=",
        ]
        children.append(Child("alertmanager", argv, run_dir, env))
    missing = [
        package
        for package, found in (
            ("prometheus", prometheus),
            ("prometheus-alertmanager", alertmanager),
        )
        if not found
    ]
    if monitoring and missing:
        names = " ".join(missing)
        print(f"(not started, not installed: {names}; apt-get install {names})")
    for child in children:
        print(f"started {child.name} (pid {child.process.pid}), log {child.log_path}", flush=True)


class StartupFailedError(Exception):
    """A child exited, or the services were not ready in time. Raised in a task as an ordinary
    exception: a SystemExit raised there would escape the event loop unretrieved."""


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def _wait_ready(
    children: list[Child], grpc_path: Transport, rest_path: Transport, ports: Ports
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    monitors = {"prometheus": ports.prometheus, "alertmanager": ports.alertmanager}
    waiting = [*(c for c in children if c.name in monitors)]
    while True:
        for child in children:
            if not child.running():
                raise StartupFailedError(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"see {child.log_path}"
                )
        waiting = [
            c
            for c in waiting
            if not await asyncio.to_thread(_http_ok, f"http://127.0.0.1:{monitors[c.name]}/-/ready")
        ]
        if (
            not waiting
            and await grpc_path.ready(MODEL) is None
            and await rest_path.ready(MODEL) is None
        ):
            return
        if time.monotonic() > deadline:
            raise StartupFailedError(
                f"not ready after {READY_TIMEOUT_S:.0f} s; logs in {children[0].log_path.parent}"
            )
        await asyncio.sleep(0.5)


async def _where_to_look(
    grpc_path: Transport,
    rest_path: Transport,
    body: dict[str, bytes],
    run_dir: Path,
    ports: Ports,
    children: list[Child],
) -> None:
    rest_answer = await rest_path.send(body["rest"])
    _, traceparent = new_traceparent()
    grpc_answer = await grpc_path.send(body["grpc"], traceparent)
    names = {child.name for child in children}
    gateway = f"http://127.0.0.1:{ports.gateway}"
    lines = [
        "",
        f"model server  gRPC     127.0.0.1:{ports.grpc}",
        f"              metrics  http://127.0.0.1:{ports.server_metrics}/metrics",
        f"gateway       REST     {gateway}/v2/models/{MODEL}/infer  (API docs {gateway}/docs)",
        f"              metrics  http://127.0.0.1:{ports.gateway_metrics}/metrics",
    ]
    if "prometheus" in names:
        prometheus = f"http://127.0.0.1:{ports.prometheus}"
        lines += [
            f"prometheus             {prometheus}/targets  (both services scraped every 5 s)",
            f"              try      {prometheus}/graph?g0.expr="
            "sum+by+(status)+(rate(inferwatch_server_requests_total[1m]))",
            f"              accuracy {prometheus}/graph?g0.expr=inferwatch_feedback_accuracy_ratio",
            f"              alerts   {prometheus}/alerts  (the shipped rules)",
        ]
    if "alertmanager" in names:
        lines.append(f"alertmanager           http://127.0.0.1:{ports.alertmanager}")
    lines += [
        f"logs          {run_dir}/  ({', '.join(f'{c.name}.log' for c in children)})",
        f"example trace {rest_answer.trace_id or '(none: telemetry off)'}  "
        "(a REST request: gateway span -> model server spans)",
        f"  its logs:   grep {rest_answer.trace_id} {run_dir}/*.log",
        f"  a gRPC one: {grpc_answer.trace_id} (from the traceparent the demo sent)",
    ]
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        lines.append(
            "  (spans are exported once OTEL_EXPORTER_OTLP_ENDPOINT points at a collector)"
        )
    lines.append("sending demo traffic over gRPC and through the gateway (Ctrl-C to stop)\n")
    print(*lines, sep="\n", flush=True)


class _Window:
    """Throughput, latency, accuracy, errors and true labels of one path since its last report."""

    def __init__(self, recorder: Recorder, labeller: Labeller) -> None:
        self._recorder = recorder
        self._labeller = labeller
        self._correct = self._labelled = 0
        self._labels = self._labels_ok = self._labels_correct = 0

    def line(self, elapsed_s: float) -> str:
        recorder = self._recorder
        window = recorder.take_window()
        correct = recorder.correct - self._correct
        labelled = recorder.labelled - self._labelled
        self._correct, self._labelled = recorder.correct, recorder.labelled
        if not window.latencies:
            return f"{window.errors} errors, no successful request"
        latency = percentiles_ms(window.latencies)
        accuracy = f"{correct / labelled:.3f}" if labelled else "-"
        return (
            f"{len(window.latencies) / elapsed_s:7.0f} req/s  p50 {latency['p50']:5.2f} ms  "
            f"p99 {latency['p99']:5.2f} ms  accuracy {accuracy}  errors {window.errors}  "
            + self._labels_part()
        )

    def _labels_part(self) -> str:
        """Labels sent since the last report, and the accuracy the model server counts."""
        labeller = self._labeller
        sent, ok = labeller.sent - self._labels, labeller.ok - self._labels_ok
        correct = labeller.correct - self._labels_correct
        self._labels, self._labels_ok, self._labels_correct = (
            labeller.sent,
            labeller.ok,
            labeller.correct,
        )
        by_labels = f"{correct / ok:.3f}" if ok else "-"
        return f"labels {ok} ok {sent - ok} failed (accuracy by the labels {by_labels})"


async def _drift_line(channel: grpc.aio.Channel) -> str:
    stub = mon_grpc.ModelMonitoringStub(channel)
    try:
        answer = await stub.ModelDrift(mon_pb.ModelDriftRequest(name=MODEL), timeout=5)
    except grpc.aio.AioRpcError as error:
        return f"drift    unavailable: {error.details()}"
    report = json.loads(answer.report_json)
    window = f"window {report['window']['rows']} rows"
    score = report.get("score")
    if score is None:  # too few rows yet for any statistic
        return f"drift    {report['status']}  {window}"
    return (
        f"drift    {report['status']}  score {score:.2f}  "
        f"drifted features {report['drifted_features']}  {window}"
    )


async def _report(
    windows: dict[str, _Window], ports: Ports, children: list[Child], stop: asyncio.Event
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc}") as channel:
        while not stop.is_set():
            started = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
            if stop.is_set():
                return
            elapsed = time.perf_counter() - started
            for name, window in windows.items():
                print(f"{name:8} {window.line(elapsed)}", flush=True)
            print(await _drift_line(channel), flush=True)
            for child in children:
                if not child.running():
                    print(
                        f"{child.name} exited with code {child.process.returncode}; "
                        f"see {child.log_path}",
                        flush=True,
                    )
                    stop.set()


async def _demo(
    args: argparse.Namespace, ports: Ports, run_dir: Path, children: list[Child]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    split = digits.load_split()
    pixels = SHIFTS[args.drift](split.x_test)
    paths: dict[str, Transport] = {
        "gRPC": GrpcTransport(f"127.0.0.1:{ports.grpc}", timeout_s=5),
        "gateway": HttpTransport(f"http://127.0.0.1:{ports.gateway}", MODEL, timeout_s=5),
    }
    # Each path replays its own half of the held-out split, so the drift window (as many rows as
    # the split) holds the split about once, not rows both paths sent: repeats would read as drift.
    halves = {"gRPC": slice(0, None, 2), "gateway": slice(1, None, 2)}
    bodies = {
        name: payloads.build(
            protocol, MODEL, pixels[halves[name]], split.y_test[halves[name]], payloads.Mix()
        )
        for name, protocol in (("gRPC", "grpc"), ("gateway", "rest"))
    }
    try:
        ready = asyncio.create_task(_wait_ready(children, paths["gRPC"], paths["gateway"], ports))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([ready, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not ready.done():
            ready.cancel()
            return
        try:
            ready.result()
        except StartupFailedError as error:
            raise SystemExit(str(error)) from None
        first = {
            "grpc": bodies["gRPC"].bodies[payloads.Kind.CLEAN][0],
            "rest": bodies["gateway"].bodies[payloads.Kind.CLEAN][0],
        }
        await _where_to_look(paths["gRPC"], paths["gateway"], first, run_dir, ports, children)
        plan = Plan(rate=args.rate, duration_s=args.duration)
        label_plan = LabelPlan(args.label_ratio, args.label_delay, args.wrong_labels)
        kind = "wrong labels on purpose" if label_plan.wrong else "true labels"
        print(
            f"sending {kind} for {label_plan.ratio:.0%} of the answers, "
            f"{label_plan.delay_s:g} s after each\n",
            flush=True,
        )
        recorders = {name: Recorder() for name in paths}
        labellers = {
            name: Labeller(label_plan, paths[name], MODEL, seed=index)
            for index, name in enumerate(paths)
        }
        runs = [
            Run(plan, paths[name], bodies[name], recorders[name], labellers[name]) for name in paths
        ]
        windows = {name: _Window(recorders[name], labellers[name]) for name in paths}
        reporter = asyncio.create_task(_report(windows, ports, children, stop))
        labelling = [asyncio.create_task(labeller.run()) for labeller in labellers.values()]
        watcher = asyncio.create_task(_stop_runs(runs, [*labellers.values()], stop))
        await asyncio.gather(*(run.run() for run in runs))
        stop.set()
        await asyncio.gather(reporter, watcher, *labelling)
    finally:
        for transport in paths.values():
            await transport.close()


async def _stop_runs(runs: list[Run], labellers: list[Labeller], stop: asyncio.Event) -> None:
    """On stop: no more requests, and labels not yet due are dropped."""
    await stop.wait()
    for run in runs:
        run.stop()
    for labeller in labellers:
        labeller.stop()


def _ports(args: argparse.Namespace) -> Ports:
    def env(name: str, default: int) -> int:
        return int(os.environ.get(name, default))

    return Ports(
        grpc=env("MODEL_SERVER_GRPC_PORT", 8001),
        gateway=env("GATEWAY_PORT", 8000),
        server_metrics=env("MODEL_SERVER_METRICS_PORT", 9464),
        gateway_metrics=env("GATEWAY_METRICS_PORT", 9465),
        prometheus=args.prometheus_port,
        alertmanager=args.alertmanager_port,
    )


def main(argv: list[str] | None = None) -> int:
    """Run everything until Ctrl-C, SIGTERM or `--duration`; then stop it all and exit 0."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rate", type=float, default=50.0, help="requests per second on each path (default 50)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="stop after this many seconds of traffic (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--drift",
        choices=sorted(SHIFTS),
        default="none",
        help="shift the inputs (gaussian noise, brightness +4, inverted pixels) to see drift fire",
    )
    parser.add_argument(
        "--label-ratio",
        type=float,
        default=0.3,
        help="share of answers whose true label is sent back later (default 0.3)",
    )
    parser.add_argument(
        "--label-delay",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds from an answer to its label (default 5)",
    )
    parser.add_argument(
        "--wrong-labels",
        action="store_true",
        help="send the next digit as the true label: to the model server the model is wrong on "
        "purpose, its live accuracy falls near 0 and InferWatchAccuracyBelowFloor goes pending "
        "in Prometheus once 100 labels are in (firing 10 minutes later)",
    )
    parser.add_argument(
        "--run-dir", type=Path, help="where logs and configs go (default runs/<time>)"
    )
    parser.add_argument(
        "--no-monitoring", action="store_true", help="do not start Prometheus and Alertmanager"
    )
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    args = parser.parse_args(argv)
    for option in ("rate", "duration", "label_ratio", "label_delay"):
        value = getattr(args, option)
        if value is not None and not math.isfinite(value):
            parser.error(f"--{option.replace('_', '-')}: {value} is not a finite number")
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration: {args.duration} is not above 0")
    if args.rate <= 0:
        parser.error(f"--rate: {args.rate} is not above 0")
    if not 0 <= args.label_ratio <= 1:
        parser.error(f"--label-ratio: {args.label_ratio} is not from 0 to 1")
    if args.label_delay < 0:
        parser.error(f"--label-delay: {args.label_delay} is below 0")
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    ports = _ports(args)
    children: list[Child] = []
    for signum in (signal.SIGTERM, signal.SIGHUP):  # like Ctrl-C until the event loop runs
        signal.signal(signum, signal.default_int_handler)
    try:
        _start(run_dir, ports, not args.no_monitoring, children)
        asyncio.run(_demo(args, ports, run_dir, children))
    except KeyboardInterrupt:
        pass  # before the event loop took the signals over: stop the same way
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # let the stop finish
            signal.signal(signum, signal.SIG_IGN)
        print("\nstopping", flush=True)
        for child in reversed(children):
            child.stop()
            print(f"{child.name} stopped (exit code {child.process.returncode})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
