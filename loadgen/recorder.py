"""What a run measured: every answer by kind and status, latencies of the successful ones,
and a window since the last look for the live progress line."""

from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from loadgen.payloads import Kind
from loadgen.transports import OK, Answer

#: What a malformed or fault request must get back; anything else is unexpected.
EXPECTED: dict[Kind, frozenset[str]] = {
    Kind.CLEAN: frozenset({OK}),
    Kind.FAULT_DELAY: frozenset({OK}),
    Kind.MALFORMED: frozenset({"INVALID_ARGUMENT", "HTTP 400"}),
    Kind.FAULT_ERROR: frozenset({"INTERNAL", "HTTP 500"}),
}


@dataclass
class Window:
    """Answers since the window began."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0


class Recorder:
    """Answers by kind and status; latencies of the successful ones."""

    def __init__(self) -> None:
        self.latencies = array("d")
        """Seconds, of the successful answers."""
        self.statuses: Counter[tuple[Kind, str]] = Counter()
        self.details: dict[str, str] = {}
        """The first detail message seen for each failed status."""
        self.correct = 0
        self.labelled = 0
        self.skipped = 0
        """Open loop: requests not sent because `max_in_flight` were outstanding."""
        self.window = Window()

    def record(self, kind: Kind, answer: Answer, latency_s: float, expected_label: int) -> None:
        """One answer."""
        status = answer.status
        self.statuses[kind, status] += 1
        if status == OK:
            self.latencies.append(latency_s)
            self.window.latencies.append(latency_s)
            if answer.label is not None:
                self.labelled += 1
                self.correct += answer.label == expected_label
        else:
            self.window.errors += 1
            self.details.setdefault(status, answer.detail)

    def take_window(self) -> Window:
        """The answers since the last call; starts a new window."""
        window, self.window = self.window, Window()
        return window

    @property
    def total(self) -> int:
        """Answers recorded."""
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        """Answers recorded that were not OK."""
        return self.total - len(self.latencies)

    def unexpected(self, kind: Kind) -> int:
        """Answers to requests of `kind` that were not what such a request should get."""
        return sum(
            count
            for (recorded, status), count in self.statuses.items()
            if recorded is kind and status not in EXPECTED[kind]
        )


def percentiles_ms(latencies_s: "array[float] | list[float]") -> dict[str, float]:
    """p50, p90, p99, p99.9, max and mean in milliseconds (empty dict without latencies)."""
    if not latencies_s:
        return {}
    values = np.asarray(latencies_s) * 1000
    p50, p90, p99, p999 = np.percentile(values, [50, 90, 99, 99.9])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
