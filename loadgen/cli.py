"""`inferwatch-load`: send the digits test split to a model server (gRPC) or the gateway (REST).

    inferwatch-load --target grpc://127.0.0.1:8001 --concurrency 8 --duration 30
    inferwatch-load --target http://127.0.0.1:8000 --rate 200 --requests 5000 --drift invert
    inferwatch-load --malformed-ratio 0.05 --fault-error-ratio 0.02 --burst 4:2:10 --json out.json
    inferwatch-load --rate 50 --duration 600 --label-ratio 0.3 --label-delay 5 --wrong-labels
    GATEWAY_KEY=k-1 inferwatch-load --target http://127.0.0.1:8000 --api-key-env GATEWAY_KEY

A live progress line on a terminal (stderr), then a summary table (stdout); Ctrl-C stops early
and still prints it. The fault switches that act inside the model server need it started with
`--fault-injection` (`MODEL_SERVER_FAULT_INJECTION=true`); otherwise it refuses those requests.
True labels (`--label-ratio`) go back by each answer's id: over gRPC with the model server's
Feedback RPC, over REST with the gateway's `POST /v2/models/{model}/feedback`.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from loadgen import payloads, progress, report
from loadgen.feedback import Labeller, LabelPlan
from loadgen.recorder import Recorder
from loadgen.runner import Burst, Plan, Run
from loadgen.shifts import SHIFTS
from loadgen.transports import GrpcTransport, HttpTransport, Transport
from model_server import digits


def _number(text: str) -> float:
    """A finite number: inf would never end a schedule, NaN compares false with everything."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _ratio(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a ratio from 0 to 1")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def _burst(text: str) -> Burst:
    try:
        factor, length, every = (_number(part) for part in text.split(":"))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FACTOR:SECONDS:EVERY, e.g. 4:2:10"
        ) from None
    if factor <= 1 or not 0 < length < every:
        raise argparse.ArgumentTypeError(
            f"{text!r}: needs FACTOR above 1 and 0 < SECONDS < EVERY, e.g. 4:2:10"
        )
    return Burst(factor, length, every)


def _has_port(url: SplitResult) -> bool:
    try:
        return url.port is not None
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferwatch-load",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target",
        default="grpc://127.0.0.1:8001",
        help="grpc://HOST:PORT (a model server) or http://HOST:PORT (the gateway); "
        "default grpc://127.0.0.1:8001",
    )
    parser.add_argument("--model", default=digits.MODEL_NAME, help="model name (default digits)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=_count, help="closed loop: clients (default 8)")
    load.add_argument("--rate", type=_positive, help="open loop: requests per second")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration", type=_positive, help="seconds to measure (default 10, after --warmup)"
    )
    amount.add_argument("--requests", type=_count, help="send this many requests, then stop")
    parser.add_argument(
        "--warmup",
        type=_non_negative,
        default=0.0,
        help="seconds of load before measuring (default 0)",
    )
    parser.add_argument(
        "--drift", choices=sorted(SHIFTS), default="none", help="shift the inputs (default none)"
    )
    parser.add_argument(
        "--malformed-ratio",
        type=_ratio,
        default=0.0,
        help="share of requests with a malformed input (the server must refuse them)",
    )
    parser.add_argument(
        "--fault-error-ratio",
        type=_ratio,
        default=0.0,
        help="share of requests asking the model server to fail (needs its fault injection)",
    )
    parser.add_argument(
        "--fault-delay",
        type=int,
        default=0,
        metavar="MS",
        help="ask the model server to wait MS milliseconds before the model runs "
        "(needs its fault injection)",
    )
    parser.add_argument(
        "--fault-delay-ratio",
        type=_ratio,
        default=1.0,
        help="share of requests carrying --fault-delay (default 1: all)",
    )
    parser.add_argument(
        "--burst",
        type=_burst,
        metavar="FACTOR:SECONDS:EVERY",
        help="every EVERY seconds, SECONDS at FACTOR times the load (more clients, or rate)",
    )
    parser.add_argument(
        "--timeout", type=_positive, default=10.0, help="per-request timeout, s (default 10)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=_count,
        default=1024,
        help="open loop: at most this many requests outstanding; more are counted, not sent",
    )
    parser.add_argument(
        "--wait-ready",
        type=_non_negative,
        default=10.0,
        help="seconds to wait for the model to be ready before starting (default 10)",
    )
    parser.add_argument(
        "--label-ratio",
        type=_ratio,
        default=0.0,
        help="share of answered requests whose true label (from the digits test split) is sent "
        "back later, named by the answer's id: the Feedback RPC for grpc://, the gateway's "
        "POST /v2/models/{model}/feedback for http:// (default 0: none)",
    )
    parser.add_argument(
        "--label-delay",
        type=_non_negative,
        default=5.0,
        metavar="SECONDS",
        help="seconds from an answer to its label (default 5); labels still due when the load "
        "ends are sent on time before the summary, Ctrl-C drops them (counted unsent)",
    )
    parser.add_argument(
        "--wrong-labels",
        action="store_true",
        help="send a wrong label on purpose (the next digit: 0->1, ..., 9->0): the model server "
        "then sees a model that is almost always wrong, its live accuracy falls near 0 and, "
        "with 100 labels in the window, the accuracy alert fires after its 10 min hold",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VARIABLE",
        help="send the API key held in this environment variable with every request "
        "(Authorization: Bearer, as gRPC metadata too), e.g. for a gateway with "
        "GATEWAY_API_KEYS; read from the environment so it stays out of the process list",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault and label draws")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary here")
    return parser


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, Plan, payloads.Mix]:
    parser = _parser()
    args = parser.parse_args(argv)
    target = urlsplit(args.target)
    if target.scheme not in ("grpc", "http") or not target.hostname or not _has_port(target):
        parser.error(f"--target: {args.target!r} is not grpc://HOST:PORT or http://HOST:PORT")
    if args.warmup and args.requests is not None:
        parser.error("--warmup: works with --duration only, not --requests")
    if args.wrong_labels and not args.label_ratio:
        parser.error("--wrong-labels: needs --label-ratio above 0")
    if not 0 <= args.fault_delay <= 60_000:
        parser.error(f"--fault-delay: {args.fault_delay} is not from 0 to 60000 ms")
    if args.json is not None:
        _check_writable(parser, args.json)
    args.headers = _auth_headers(parser, args.api_key_env)
    mix = payloads.Mix(
        malformed=args.malformed_ratio,
        fault_error=args.fault_error_ratio,
        fault_delay=args.fault_delay_ratio if args.fault_delay else 0.0,
        fault_delay_ms=args.fault_delay,
    )
    faulty = mix.malformed + mix.fault_error + mix.fault_delay
    if faulty > 1:
        parser.error(
            f"--malformed-ratio + --fault-error-ratio + --fault-delay-ratio is {faulty:g}; "
            "a request carries one fault at most, so at most 1"
        )
    plan = Plan(
        concurrency=None if args.rate is not None else args.concurrency or 8,
        rate=args.rate,
        duration_s=10.0 if args.duration is None and args.requests is None else args.duration,
        requests=args.requests,
        warmup_s=args.warmup,
        burst=args.burst,
        max_in_flight=args.max_in_flight,
        seed=args.seed,
    )
    return args, plan, mix


def _check_writable(parser: argparse.ArgumentParser, path: Path) -> None:
    """Refuses a `--json` path that could not be written, before the load rather than after."""
    if path.is_dir():
        parser.error(f"--json: {path} is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--json: cannot create {path.parent}: {error.strerror}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        parser.error(f"--json: {path} is not writable")


def _auth_headers(parser: argparse.ArgumentParser, variable: str | None) -> dict[str, str]:
    """The Authorization header for `--api-key-env`; errors never show the key."""
    if variable is None:
        return {}
    key = os.environ.get(variable, "")
    if not key:
        parser.error(f"--api-key-env: the environment variable {variable} is not set or empty")
    if not all("!" <= character <= "~" for character in key):
        parser.error(
            f"--api-key-env: the key in {variable} holds a character a header cannot carry "
            "(space, control or non-ASCII)"
        )
    return {"authorization": f"Bearer {key}"}


def transport_for(target: str, model: str, timeout_s: float, headers: dict[str, str]) -> Transport:
    """The transport a `--target` names, sending `headers` with every request (call inside
    the event loop)."""
    if target.startswith("grpc://"):
        return GrpcTransport(target.removeprefix("grpc://"), timeout_s, headers)
    return HttpTransport(target, model, timeout_s, headers)


async def wait_ready(transport: Transport, model: str, timeout_s: float) -> str | None:
    """None once the model is ready; else why not, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        reason = await transport.ready(model)
        if reason is None or time.monotonic() >= deadline:
            return reason
        await asyncio.sleep(0.2)


async def _run(args: argparse.Namespace, plan: Plan, body_set: payloads.Payloads) -> int:
    transport = transport_for(args.target, args.model, args.timeout, args.headers)
    try:
        reason = await wait_ready(transport, args.model, args.wait_ready)
        if reason is not None:
            print(f"{transport.target}: not ready after {args.wait_ready:g} s: {reason}")
            return 1
        recorder = Recorder()
        labeller = _labeller(args, transport)
        run = Run(plan, transport, body_set, recorder, labeller)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _stopper(run, labeller))
        labelling = None if labeller is None else asyncio.create_task(labeller.run())
        live = (
            asyncio.create_task(progress.show(run, recorder, sys.stderr))
            if sys.stderr.isatty()
            else None
        )
        try:
            await run.run()
            if labeller is not None and labelling is not None:
                labeller.finish()
                await labelling
        finally:
            for task in (live, labelling):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        result = report.summary(run, recorder, transport.target, body_set.digest(), labeller)
    finally:
        await transport.close()
    print(report.table(result), flush=True)
    if args.json is not None:
        try:
            _write_json(args.json, result)
        except OSError as error:  # checked at the start; it can still change meanwhile
            print(f"--json: could not write {args.json}: {error.strerror}", file=sys.stderr)
            return 1
    return 0


def _labeller(args: argparse.Namespace, transport: Transport) -> Labeller | None:
    if not args.label_ratio:
        return None
    plan = LabelPlan(args.label_ratio, args.label_delay, args.wrong_labels)
    return Labeller(plan, transport, args.model, seed=args.seed + 1)


def _stopper(run: Run, labeller: Labeller | None) -> Callable[[], None]:
    """Ctrl-C: stop sending requests, and labels not yet due."""

    def stop() -> None:
        run.stop()
        if labeller is not None:
            labeller.stop()

    return stop


def _write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the load; 0 when it ran (errors are results), 1 when the target was not ready or the
    summary could not be written to `--json` (it is printed all the same), 130 when interrupted
    before the load started."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted before the load started")
        return 130


def _main(argv: list[str] | None) -> int:
    args, plan, mix = _parse(argv)
    split = digits.load_split()
    protocol = "grpc" if args.target.startswith("grpc://") else "rest"
    body_set = payloads.build(
        protocol, args.model, SHIFTS[args.drift](split.x_test), split.y_test, mix
    )
    return asyncio.run(_run(args, plan, body_set))
