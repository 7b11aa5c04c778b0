"""Metric names in a PromQL expression, and the metrics docs/telemetry.md and docs/stack.md list."""

import re
from pathlib import Path

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """Every metric an expression reads (identifiers that are not functions or keywords)."""
    text = _LABEL_LISTS.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub('""', expr))))
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def _first_column(doc: Path, header: str, column: str) -> set[str]:
    """Values of `column` in the first table under `## header` (backticks removed)."""
    body = doc.read_text(encoding="utf-8").split(f"\n## {header}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    names = [cell.strip() for cell in rows[0].strip("|").split("|")]
    index = names.index(column)
    return {line.strip("|").split("|")[index].strip().strip("`") for line in rows[2:]}


def documented_metrics(telemetry_doc: Path, stack_doc: Path) -> dict[str, str]:
    """Series names Prometheus can hold -> where they come from: `telemetry` (our services,
    histograms expanded to _bucket/_sum/_count), `gpu` (only with a GPU) or `stack`."""
    body = telemetry_doc.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1]
    rows = [line for line in body.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    names: dict[str, str] = {}
    for line in rows[2:]:
        row = dict(
            zip(header, (c.strip().strip("`") for c in line.strip("|").split("|")), strict=True)
        )
        origin = "gpu" if row["when"] == "GPU" else "telemetry"
        base = row["Prometheus name"]
        suffixes = ("_bucket", "_sum", "_count") if row["type"] == "histogram" else ("",)
        names.update({base + suffix: origin for suffix in suffixes})
    names.update(dict.fromkeys(_first_column(stack_doc, "Stack metrics", "metric"), "stack"))
    return names
