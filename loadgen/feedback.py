"""Delayed true labels: for a share of the answers, the test split's label for the answered row
is sent back `delay_s` seconds later, joined by the answer's id (docs/feedback.md).

Labels due together go in one Feedback call (at most one call every `_MIN_GAP_S`, so a label
may arrive up to that much later than its delay, never earlier). `wrong` sends the next digit
instead of the true one, so the model server's live accuracy falls as if the model were wrong.
"""

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from loadgen.transports import OK_LABEL, Transport

MAX_ITEMS = 10_000
"""Most items one Feedback call takes."""
CLASSES = 10
_MIN_GAP_S = 0.1


@dataclass(frozen=True)
class LabelPlan:
    """Which answers get a label, how late, and whether it is the truth."""

    ratio: float
    delay_s: float = 5.0
    wrong: bool = False

    def label(self, truth: int) -> str:
        """The label sent for a row whose true class is `truth`."""
        return str((truth + 1) % CLASSES if self.wrong else truth)


@dataclass(frozen=True, slots=True)
class _Due:
    at: float
    response_id: str
    label: str


class Labeller:
    """Collects answers to label (`offer`) and sends each label when it is due (`run`)."""

    def __init__(self, plan: LabelPlan, transport: Transport, model: str, seed: int = 0) -> None:
        self.plan = plan
        self._transport = transport
        self._model = model
        self._random = random.Random(seed)
        self._pending: deque[_Due] = deque()
        self._wake = asyncio.Event()
        self._finishing = False
        self._stopped = False
        self._next_call = 0.0
        self.sent = 0
        self.results: Counter[str] = Counter()
        """Items by result: `ok`, a refusal (`unknown_id`, …), or a failed call's status."""
        self.correct = 0
        """Accepted labels equal to the prediction, as the model server counts them."""

    def offer(self, response_id: str, truth: int) -> None:
        """An answered request; drawn for a label with probability `plan.ratio`."""
        if self._finishing or self._random.random() >= self.plan.ratio:
            return
        due = _Due(time.monotonic() + self.plan.delay_s, response_id, self.plan.label(truth))
        self._pending.append(due)
        if len(self._pending) == 1:
            self._wake.set()

    def finish(self) -> None:
        """No more answers: `run` returns once every pending label is sent."""
        self._finishing = True
        self._wake.set()

    def stop(self) -> None:
        """Stop now: pending labels are not sent (`unsent`)."""
        self._stopped = True
        self._wake.set()

    @property
    def unsent(self) -> int:
        """Labels drawn but not sent (stopped before they were due)."""
        return len(self._pending)

    @property
    def ok(self) -> int:
        """Labels the model server accepted."""
        return self.results[OK_LABEL]

    async def run(self) -> None:
        """Send labels as they fall due, until `finish` (all sent) or `stop`."""
        while not self._stopped:
            if not self._pending:
                if self._finishing:
                    return
                await self._wait(None)
                continue
            wait_s = max(self._pending[0].at, self._next_call) - time.monotonic()
            if wait_s > 0:
                await self._wait(wait_s)
                continue
            await self._send_due()

    async def _wait(self, timeout_s: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    async def _send_due(self) -> None:
        now = time.monotonic()
        due: list[_Due] = []
        while self._pending and self._pending[0].at <= now and len(due) < MAX_ITEMS:
            due.append(self._pending.popleft())
        results = await self._transport.feedback(
            self._model, [(item.response_id, item.label) for item in due]
        )
        self.sent += len(due)
        for result in results:
            self.results[result.result] += 1
            self.correct += result.correct
        self._next_call = time.monotonic() + _MIN_GAP_S

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts; `accuracy` is over the accepted labels (what the server counts)."""
        return {
            "ratio": self.plan.ratio,
            "delay_s": self.plan.delay_s,
            "wrong": self.plan.wrong,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.sent - self.ok,
            "unsent": self.unsent,
            "results": dict(self.results),
            "accuracy": self.correct / self.ok if self.ok else None,
        }
