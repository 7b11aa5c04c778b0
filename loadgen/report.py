"""The run's summary: a dict for --json, and a table for people."""

from typing import Any

from loadgen.feedback import Labeller
from loadgen.payloads import Kind
from loadgen.recorder import Recorder, percentiles_ms
from loadgen.runner import Run


def summary(
    run: Run,
    recorder: Recorder,
    target: str,
    payload_sha256: str,
    labeller: Labeller | None = None,
) -> dict[str, Any]:
    """Everything measured, JSON-ready; `labels` is None when no true labels were sent."""
    plan = run.plan
    elapsed = run.elapsed_s
    statuses: dict[str, int] = {}
    for (_, status), count in recorder.statuses.items():
        statuses[status] = statuses.get(status, 0) + count
    kinds = {
        kind.value: {
            "sent": sum(c for (k, _), c in recorder.statuses.items() if k is kind),
            "statuses": {s: c for (k, s), c in recorder.statuses.items() if k is kind},
            "unexpected": recorder.unexpected(kind),
        }
        for kind in Kind
        if any(k is kind for k, _ in recorder.statuses)
    }
    return {
        "target": target,
        "loop": "open" if plan.rate is not None else "closed",
        "concurrency": plan.concurrency,
        "rate": plan.rate,
        "measured_s": elapsed,
        "rates_over": "window" if run.window_is_duration else "until_last_answer",
        "drain_s": run.drain_s,
        "requests": recorder.total,
        "ok": len(recorder.latencies),
        "errors": recorder.errors,
        "skipped": recorder.skipped,
        "throughput_rps": recorder.total / elapsed if elapsed else 0.0,
        "ok_rps": len(recorder.latencies) / elapsed if elapsed else 0.0,
        "latency_ms": percentiles_ms(recorder.latencies),
        "accuracy": recorder.correct / recorder.labelled if recorder.labelled else None,
        "statuses": statuses,
        "kinds": kinds,
        "error_details": recorder.details,
        "labels": None if labeller is None else labeller.summary(),
        "payload_sha256": payload_sha256,
    }


def table(result: dict[str, Any]) -> str:
    """The summary as aligned text."""
    load = (
        f"open loop, {result['rate']:g} req/s"
        if result["loop"] == "open"
        else f"closed loop, concurrency {result['concurrency']}"
    )
    latency = result["latency_ms"]
    lines = [
        f"target      {result['target']} ({load}, {result['measured_s']:.1f} s measured)",
        f"requests    {result['requests']:,} at {result['throughput_rps']:,.1f} req/s; "
        f"{result['ok']:,} ok, {result['errors']:,} errors"
        + (f", {result['skipped']:,} not sent (max in flight)" if result["skipped"] else ""),
        "latency ms  "
        + (
            "  ".join(f"{name} {latency[name]:.2f}" for name in latency)
            if latency
            else "no successful request"
        ),
        _rates_line(result),
    ]
    if result["accuracy"] is not None:
        lines.append(f"accuracy    {result['accuracy']:.3f} (label against the test split)")
    if result["labels"] is not None:
        lines.append(_labels_line(result["labels"]))
    lines += ["", f"{'kind':<12}{'sent':>10}  {'unexpected':>10}  statuses"]
    for kind, counts in result["kinds"].items():
        statuses = ", ".join(f"{s} {c:,}" for s, c in sorted(counts["statuses"].items()))
        lines.append(f"{kind:<12}{counts['sent']:>10,}  {counts['unexpected']:>10,}  {statuses}")
    for status, detail in sorted(result["error_details"].items()):
        lines.append(f"{status}: {detail}")
    return "\n".join(lines)


def _rates_line(result: dict[str, Any]) -> str:
    """How req/s was computed: the answers it counts over the seconds it divides by."""
    if result["rates_over"] == "until_last_answer":
        return "rates       over the time from the first request to the last answer"
    line = "rates       over the measured window, counting every request due in it"
    if round(result["drain_s"], 1):
        line += f" (its last answer came {result['drain_s']:.1f} s after the window)"
    return line


def _labels_line(labels: dict[str, Any]) -> str:
    kind = "wrong labels on purpose" if labels["wrong"] else "true labels"
    line = (
        f"labels      {labels['sent']:,} {kind} sent ({labels['ratio']:.0%} of answers, "
        f"{labels['delay_s']:g} s later): {labels['ok']:,} ok, {labels['errors']:,} errors"
    )
    if labels["unsent"]:
        line += f", {labels['unsent']:,} unsent"
    if labels["accuracy"] is not None:
        line += f"; accuracy by the labels {labels['accuracy']:.3f}"
    refused = ", ".join(f"{r} {c:,}" for r, c in sorted(labels["results"].items()) if r != "ok")
    return line + (f"\n            not ok: {refused}" if refused else "")
