"""Feedback with several model servers: every one is asked, and the answers merged per item.

A response id says nothing about which model server made the prediction (a caller may choose
it), so a feedback request goes to every configured model server, each keeping its own
predictions. Per item the most telling answer wins: `ok`, then a refusal about the prediction
itself (duplicate, invalid label or row, another model's), then `expired`/`evicted`, then
`unknown_id`. A model server that answers NOT_FOUND (it does not serve the model) keeps none of
them; when another one fails (unreachable, timed out), an item no model server that answered
knows is `unavailable`, not unknown: the one that failed may keep it. When none answers, the
request fails with the most telling error: any but NOT_FOUND, else NOT_FOUND.
"""

from collections.abc import Sequence

from gateway.errors import BadGatewayError, GatewayError, NotFoundError
from model_server.proto import monitoring_pb2 as mon_pb

_RANK = {
    mon_pb.FEEDBACK_RESULT_OK: 4,
    mon_pb.FEEDBACK_RESULT_DUPLICATE: 3,
    mon_pb.FEEDBACK_RESULT_INVALID_LABEL: 3,
    mon_pb.FEEDBACK_RESULT_INVALID_ROW: 3,
    mon_pb.FEEDBACK_RESULT_OTHER_MODEL: 3,
    mon_pb.FEEDBACK_RESULT_EXPIRED: 2,
    mon_pb.FEEDBACK_RESULT_EVICTED: 2,
    mon_pb.FEEDBACK_RESULT_UNKNOWN_ID: 1,
}
"""How telling an item's answer is; the highest of the model servers' answers wins."""

Merged = list[mon_pb.FeedbackItemResult | None]
"""One result per item; None: unknown to the model servers that answered, while another did
not answer."""


def merge_answers(items: int, answers: Sequence[mon_pb.FeedbackResponse | BaseException]) -> Merged:
    """Per item, the most telling of the model servers' answers (see the module docstring)."""
    responses = [answer for answer in answers if isinstance(answer, mon_pb.FeedbackResponse)]
    failures = [answer for answer in answers if not isinstance(answer, mon_pb.FeedbackResponse)]
    for failure in failures:
        if not isinstance(failure, GatewayError):
            raise failure
    if not responses:
        raise next((f for f in failures if not isinstance(f, NotFoundError)), failures[0])
    if any(len(response.results) != items for response in responses):
        raise BadGatewayError(
            f"a model server answered feedback on {items} items with another count"
        )
    unanswered = any(not isinstance(failure, NotFoundError) for failure in failures)
    merged: Merged = []
    for index in range(items):
        best = max((r.results[index] for r in responses), key=lambda r: _RANK.get(r.result, 0))
        unknown = best.result == mon_pb.FEEDBACK_RESULT_UNKNOWN_ID
        merged.append(None if unknown and unanswered else best)
    return merged
