"""The gateway's instruments, created once at import; only the OpenTelemetry API.

Attributes are bounded: HTTP method, route template and status code; backend addresses come
from the settings; model names and versions only once a model server has confirmed them or the
traffic split names them (`KnownModels`), otherwise `_unknown` and no version.
"""

from collections import Counter
from collections.abc import Iterable, Mapping

from opentelemetry import metrics, trace

from gateway import __version__
from otel import DURATION_BUCKETS_S
from otel.attributes import MODEL_NAME as MODEL_NAME
from otel.attributes import MODEL_VERSION as MODEL_VERSION
from otel.attributes import RESULT
from otel.attributes import STATUS as STATUS
from otel.attributes import UNKNOWN_MODEL as UNKNOWN_MODEL

SCOPE = "gateway"

BACKEND = "backend"
RPC_METHOD = "rpc.method"

tracer = trace.get_tracer(SCOPE, __version__)
_meter = metrics.get_meter(SCOPE, __version__)

http_server_duration = _meter.create_histogram(
    "http.server.request.duration",
    unit="s",
    description="Duration of HTTP server requests.",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
)
upstream_duration = _meter.create_histogram(
    "inferwatch.gateway.upstream.duration",
    unit="s",
    description="Duration of one gRPC call to a model server, by backend, method and status.",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
)
routed = _meter.create_counter(
    "inferwatch.gateway.routed",
    unit="{request}",
    description="Inference requests sent to the model servers, by model, version and status.",
)
feedback_items = _meter.create_counter(
    "inferwatch.gateway.feedback.items",
    unit="{item}",
    description="Feedback items answered by the gateway, by model and result merged over the "
    "model servers (ok, unknown_id, unavailable, ...).",
)


def record_feedback(model: Mapping[str, str], results: Iterable[str]) -> None:
    """The merged results of one feedback request, counted per result."""
    for result, count in Counter(results).items():
        feedback_items.add(count, {**model, RESULT: result})


class KnownModels:
    """Model names and versions that may label telemetry.

    A name or version is known once a model server confirmed it (answered for it) or the
    traffic split configures it, so a client cannot create series by inventing names.
    """

    def __init__(self, configured: Mapping[str, Mapping[str, int]]) -> None:
        self._versions: dict[str, set[str]] = {
            name: set(weights) for name, weights in configured.items()
        }

    def confirm(self, name: str, versions: list[str]) -> None:
        """A model server answered for `name` (and these versions)."""
        self._versions.setdefault(name, set()).update(versions)

    def attributes(self, name: str, version: str) -> dict[str, str]:
        """`model.name` (or `_unknown`) and, when known, `model.version`."""
        versions = self._versions.get(name)
        if versions is None:
            return {MODEL_NAME: UNKNOWN_MODEL}
        if version in versions:
            return {MODEL_NAME: name, MODEL_VERSION: version}
        return {MODEL_NAME: name}
