"""Sending prepared bodies: KServe v2 gRPC ModelInfer, or OIP REST v2 through the gateway.

Bodies are encoded once before the run (`loadgen.payloads`), so gRPC sends them as they are
(no serializer) and the two paths cost the client only the call and reading the label back.
"""

import asyncio
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
import numpy as np

from loadgen import http1
from loadgen.payloads import LABEL_OUTPUT
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc

OK = "OK"
OK_LABEL = "ok"
"""The result of a label the model server accepted (REST's spelling; gRPC's enum is mapped)."""
_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """How one request ended: `OK`, a gRPC status name, `HTTP <code>`, or a client-side
    failure (`CONNECTION_ERROR`, `TIMEOUT`); the label the model gave, when it answered."""

    status: str
    label: int | None = None
    trace_id: str = ""
    detail: str = ""
    id: str = ""
    """The response id, which a true label sent later names."""


@dataclass(frozen=True, slots=True)
class LabelResult:
    """How one true label ended: `ok` (then whether the prediction was `correct`), the model
    server's refusal (`unknown_id`, `expired`, …), or the status of a call that failed."""

    result: str
    correct: bool = False


def new_traceparent() -> tuple[str, str]:
    """(trace id, W3C traceparent header of a sampled span in that trace)."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


class Transport(Protocol):
    """Sends one prepared body and says how it ended."""

    target: str

    async def ready(self, model: str) -> str | None:
        """None when the model is ready, else why not."""

    async def send(self, body: bytes, traceparent: str | None = None) -> Answer:
        """One inference request."""

    async def feedback(self, model: str, labels: Sequence[tuple[str, str]]) -> list[LabelResult]:
        """True labels (response id, label) for earlier answers, one result per label."""

    async def close(self) -> None:
        """Release connections."""


class GrpcTransport:
    """One channel to a model server; every request on it (HTTP/2 multiplexing), with
    `headers` as metadata (names in lower case)."""

    def __init__(
        self, address: str, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        self.target = f"grpc://{address}"
        self._timeout_s = timeout_s
        self._metadata = tuple((headers or {}).items())
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        self._channel = grpc.aio.insecure_channel(address, options=options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._monitoring = mon_grpc.ModelMonitoringStub(self._channel)
        self._infer = self._channel.unary_unary(_MODEL_INFER)

    async def ready(self, model: str) -> str | None:
        """ModelReady."""
        try:
            answer = await self._stub.ModelReady(
                pb.ModelReadyRequest(name=model), timeout=2, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name}: {error.details()}"
        return None if answer.ready else f"model {model!r} is not ready"

    async def send(self, body: bytes, traceparent: str | None = None) -> Answer:
        """ModelInfer with a prepared request; the label is read from the response."""
        metadata = self._metadata
        if traceparent is not None:
            metadata += (("traceparent", traceparent),)
        trace_id = "" if traceparent is None else traceparent.split("-")[1]
        try:
            raw = await self._infer(body, timeout=self._timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            return Answer(error.code().name, trace_id=trace_id, detail=error.details() or "")
        response = pb.ModelInferResponse.FromString(raw)
        return Answer(OK, _grpc_label(response), trace_id, id=response.id)

    async def feedback(self, model: str, labels: Sequence[tuple[str, str]]) -> list[LabelResult]:
        """The Feedback RPC (inferwatch.monitoring.v1.ModelMonitoring)."""
        items = [mon_pb.FeedbackItem(id=response_id, label=label) for response_id, label in labels]
        try:
            answer = await self._monitoring.Feedback(
                mon_pb.FeedbackRequest(name=model, items=items),
                timeout=self._timeout_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            return [LabelResult(error.code().name)] * len(labels)
        return [LabelResult(_result_name(r.result), r.correct) for r in answer.results]

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _result_name(result: "mon_pb.FeedbackResult.ValueType") -> str:
    """FEEDBACK_RESULT_UNKNOWN_ID -> unknown_id, as the gateway spells it."""
    return mon_pb.FeedbackResult.Name(result).removeprefix("FEEDBACK_RESULT_").lower()


def _grpc_label(response: pb.ModelInferResponse) -> int | None:
    """The first value of the `label` output, raw little-endian or typed contents."""
    for index, output in enumerate(response.outputs):
        if output.name != LABEL_OUTPUT:
            continue
        if response.raw_output_contents:
            value = np.frombuffer(response.raw_output_contents[index][:8], dtype="<i8")
            return int(value[0]) if value.size else None
        values = output.contents.int64_contents or output.contents.int_contents
        return int(values[0]) if values else None
    return None


class HttpTransport:
    """Keep-alive connections to the gateway, reused by whichever request is next; `headers`
    go with every request."""

    def __init__(
        self, url: str, model: str, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"{url!r} is not http://HOST:PORT")
        self.target = f"http://{parts.hostname}:{parts.port}"
        self._host, self._port = parts.hostname, parts.port
        self._path = f"/v2/models/{model}/infer"
        self._timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._idle: list[http1.Connection] = []

    async def ready(self, model: str) -> str | None:
        """GET /v2/models/{model}/ready."""
        answer = await self._call("GET", f"/v2/models/{model}/ready", b"", None)
        if isinstance(answer, http1.Response):
            return None
        return f"{answer.status} {answer.detail}".strip()

    async def send(self, body: bytes, traceparent: str | None = None) -> Answer:
        """POST /v2/models/{model}/infer; the trace id is the answer's x-trace-id."""
        answer = await self._call("POST", self._path, body, traceparent)
        if not isinstance(answer, http1.Response):
            return answer
        document = json.loads(answer.body)
        trace_id = answer.headers.get("x-trace-id", "")
        return Answer(OK, _rest_label(document), trace_id, id=document.get("id", ""))

    async def feedback(self, model: str, labels: Sequence[tuple[str, str]]) -> list[LabelResult]:
        """POST /v2/models/{model}/feedback."""
        items = [{"id": response_id, "label": label} for response_id, label in labels]
        body = json.dumps({"items": items}, separators=(",", ":")).encode()
        answer = await self._call("POST", f"/v2/models/{model}/feedback", body, None)
        if not isinstance(answer, http1.Response):
            return [LabelResult(answer.status)] * len(labels)
        results = json.loads(answer.body)["results"]
        return [LabelResult(r["result"], bool(r.get("correct"))) for r in results]

    async def _call(
        self, method: str, path: str, body: bytes, traceparent: str | None
    ) -> http1.Response | Answer:
        """The 200 response, or an Answer saying how the call failed."""
        connection = self._idle.pop() if self._idle else http1.Connection(self._host, self._port)
        headers = self._headers
        if traceparent is not None:
            headers = {**headers, "traceparent": traceparent}
        try:
            response = await asyncio.wait_for(
                connection.request(method, path, body, headers), self._timeout_s
            )
        except TimeoutError:
            await connection.close()
            return Answer("TIMEOUT", detail=f"no answer within {self._timeout_s} s")
        except (OSError, asyncio.IncompleteReadError, http1.ProtocolError) as error:
            await connection.close()
            return Answer("CONNECTION_ERROR", detail=str(error) or type(error).__name__)
        self._idle.append(connection)
        if response.status != 200:
            trace_id = response.headers.get("x-trace-id", "")
            return Answer(f"HTTP {response.status}", trace_id=trace_id, detail=_error(response))
        return response

    async def close(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


def _rest_label(document: dict[str, Any]) -> int | None:
    for output in document.get("outputs", []):
        if output.get("name") == LABEL_OUTPUT and output.get("data"):
            return int(output["data"][0])
    return None


def _error(response: http1.Response) -> str:
    try:
        return str(json.loads(response.body)["error"])
    except (ValueError, KeyError, TypeError):
        return response.body[:200].decode("utf-8", "replace")
