"""Draws benchmarks/mlserver/results.png from bench_vs_mlserver.py's summary.json: throughput
and p99 per concurrency, medians with min-max bars. Runs in .venv-mlserver (matplotlib).

Usage: .venv-mlserver/bin/python benchmarks/mlserver/plot.py SUMMARY_JSON OUT_PNG
"""

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SERVERS = ("inferwatch", "mlserver-best", "mlserver-default")


def _throughput(run: dict[str, Any]) -> float:
    return float(run["ok_rps"])


def _p99(run: dict[str, Any]) -> float:
    return float(run["latency_ms"]["p99"])


def main(summary_file: Path, out: Path) -> None:
    """Two panels: req/s and p99 ms against concurrency, one line per server."""
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    figure, (throughput, p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in SERVERS:
        series = sorted(
            (int(key.split("c=")[1]), runs)
            for key, runs in summary["points"].items()
            if key.split(" ")[0] == name
        )
        if not series:
            continue
        xs = [c for c, _ in series]
        for axis, value in ((throughput, _throughput), (p99, _p99)):
            values = [[value(r) for r in runs] for _, runs in series]
            medians = [statistics.median(v) for v in values]
            errors = [
                [m - min(v) for m, v in zip(medians, values, strict=True)],
                [max(v) - m for m, v in zip(medians, values, strict=True)],
            ]
            axis.errorbar(xs, medians, yerr=errors, marker="o", capsize=3, label=name)
    for axis, title in (
        (throughput, "throughput, req/s (higher is better)"),
        (p99, "p99 latency, ms (lower is better)"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks([1, 8, 32, 64], ["1", "8", "32", "64"])
        axis.set_xlabel("concurrent clients")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    p99.set_yscale("log")
    throughput.legend()
    figure.suptitle(f"digits over KServe v2 gRPC, 2 shared vCPUs, commit {summary['commit']}")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
