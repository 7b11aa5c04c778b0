"""Every error case maps to its gRPC status with a message naming the field."""

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server.errors import ModelNotFoundError, echo
from model_server.grpc.handlers import add_servicer
from model_server.grpc.monitoring_servicer import SERVICE as MONITORING_SERVICE
from model_server.grpc.rpc import rpc
from model_server.grpc.server import MONITORING_DESCRIPTOR
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc
from tests.conftest import Serve, ServerThread
from tests.model_server.protocol import pixels_request, probe_request, raw_request
from tests.model_server.test_models import probe_config, write_probe
from tests.telemetry_capture import TelemetryCapture

Tensor = pb.ModelInferRequest.InferInputTensor
ROW = np.zeros((1, 64), dtype=np.float32)
LONG = 20_000
"""Characters of a client string above the 16 KiB that a gRPC status message can carry."""


def _request(**fields: object) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="digits", **fields)  # type: ignore[arg-type]


def _with_raw(tensor: Tensor, raw: bytes) -> pb.ModelInferRequest:
    return _request(inputs=[tensor], raw_input_contents=[raw])


def _typed(contents: pb.InferTensorContents, shape: list[int]) -> pb.ModelInferRequest:
    """One FP32 `pixels` input of `shape` sent in typed contents."""
    tensor = Tensor(name="pixels", datatype="FP32", shape=shape, contents=contents)
    return _request(inputs=[tensor])


BAD_REQUESTS: dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode, str]] = {
    "unknown model": (
        raw_request("nope", {"pixels": ROW}),
        grpc.StatusCode.NOT_FOUND,
        "model 'nope'",
    ),
    "empty model name": (raw_request("", {"pixels": ROW}), grpc.StatusCode.NOT_FOUND, "model_name"),
    "unknown version": (
        pixels_request(ROW, version="9"),
        grpc.StatusCode.NOT_FOUND,
        "no version '9'",
    ),
    "non-numeric version": (
        pixels_request(ROW, version="latest"),
        grpc.StatusCode.NOT_FOUND,
        "no version 'latest'",
    ),
    "wrong input name": (
        raw_request("digits", {"image": ROW}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown input 'image'",
    ),
    "missing input": (_request(), grpc.StatusCode.INVALID_ARGUMENT, "missing input 'pixels'"),
    "duplicate input": (
        _request(
            inputs=[Tensor(name="pixels", datatype="FP32", shape=[1, 64])] * 2,
            raw_input_contents=[ROW.tobytes()] * 2,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "more than once",
    ),
    "wrong datatype": (
        raw_request("digits", {"pixels": ROW.astype(np.float64)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': datatype FP64 does not match the model's FP32",
    ),
    "unsupported datatype": (
        _with_raw(Tensor(name="pixels", datatype="BF17", shape=[1, 64]), ROW.tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "datatype 'BF17' is not supported",
    ),
    "wrong feature dimension": (
        pixels_request(np.zeros((1, 63))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': shape [1, 63]",
    ),
    "wrong rank": (
        pixels_request(np.zeros((1, 8, 8))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': shape [1, 8, 8]",
    ),
    "negative dimension": (
        _with_raw(Tensor(name="pixels", datatype="FP32", shape=[-1, 64]), ROW.tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "negative dimension",
    ),
    "byte length": (
        _with_raw(Tensor(name="pixels", datatype="FP32", shape=[1, 64]), ROW.tobytes()[:-1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents[0] holds 255 bytes",
    ),
    "raw entries count": (
        _request(
            inputs=[Tensor(name="pixels", datatype="FP32", shape=[1, 64])],
            raw_input_contents=[ROW.tobytes(), ROW.tobytes()],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents has 2 entries for 1 inputs",
    ),
    "typed contents count": (
        _typed(pb.InferTensorContents(fp32_contents=[0.0] * 10), [1, 64]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "contents.fp32_contents has 10 values",
    ),
    "contents in a field of another datatype": (
        _typed(pb.InferTensorContents(fp32_contents=[0.0] * 64, int_contents=[1, 2]), [1, 64]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0] ('pixels'): FP32 data goes in contents.fp32_contents, not contents.int_contents",
    ),
    "contents and raw together": (
        _with_raw(
            Tensor(
                name="pixels",
                datatype="FP32",
                shape=[1, 64],
                contents=pb.InferTensorContents(fp32_contents=[0.0] * 64),
            ),
            ROW.tobytes(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "sets contents although the request uses raw_input_contents",
    ),
    "empty batch": (
        pixels_request(np.zeros((0, 64))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': empty batch",
    ),
    "batch above max": (
        pixels_request(np.zeros((65, 64))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "batch of 65 rows is above the model's max batch size 64",
    ),
    "unknown requested output": (
        pixels_request(ROW, outputs=["logits"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "requested output 'logits'",
    ),
    "output requested twice": (
        pixels_request(ROW, outputs=["label", "probabilities", "label"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "requested output 'label' is named more than once",
    ),
    "no elements, yet too big for an array (raw)": (
        _with_raw(Tensor(name="pixels", datatype="FP32", shape=[2**62, 0]), b""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0] ('pixels'): shape [4611686018427387904, 0] is not a possible tensor: its "
        "nonzero dimensions times the 4-byte element exceed the largest array "
        "(9223372036854775807 bytes)",
    ),
    "no elements, yet too big for an array (contents)": (
        _typed(pb.InferTensorContents(), [2**62, 0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0] ('pixels'): shape [4611686018427387904, 0] is not a possible tensor: its "
        "nonzero dimensions times the 4-byte element exceed the largest array "
        "(9223372036854775807 bytes)",
    ),
    "more dimensions than numpy takes": (
        _with_raw(Tensor(name="pixels", datatype="FP32", shape=[1] * 5_000), ROW.tobytes()[:4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"inputs[0] ('pixels'): shape {[1] * 16}…(5000 values) has 5000 dimensions; at most 64",
    ),
    "long model name": (
        raw_request("m" * LONG, {"pixels": ROW}),
        grpc.StatusCode.NOT_FOUND,
        f"model {'m' * 100!r}…({LONG} chars) is not in the repository",
    ),
    "long version": (
        pixels_request(ROW, version="v" * LONG),
        grpc.StatusCode.NOT_FOUND,
        f"model 'digits' has no version {'v' * 100!r}…({LONG} chars)",
    ),
    "long input name": (
        raw_request("digits", {"i" * LONG: ROW}),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"unknown input {'i' * 100!r}…({LONG} chars) for model digits:1",
    ),
    "long input name given twice": (
        _request(
            inputs=[Tensor(name="i" * LONG, datatype="FP32", shape=[1, 64])] * 2,
            raw_input_contents=[ROW.tobytes()] * 2,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input {'i' * 100!r}…({LONG} chars) is given more than once",
    ),
    "long datatype": (
        _with_raw(Tensor(name="pixels", datatype="D" * LONG, shape=[1, 64]), ROW.tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"inputs[0] ('pixels'): datatype {'D' * 100!r}…({LONG} chars) is not supported",
    ),
    "long requested output name": (
        pixels_request(ROW, outputs=["o" * LONG]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"requested output {'o' * 100!r}…({LONG} chars) is not an output of model digits:1",
    ),
    "NaN where the model wants finite values": (
        pixels_request(np.vstack([ROW, np.full((1, 64), np.nan)])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': row 1 holds NaN or infinite values",
    ),
    "infinity where the model wants finite values": (
        pixels_request(np.where(np.arange(64) == 3, np.inf, 0.0).reshape(1, 64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': row 0 holds NaN or infinite values",
    ),
}

#: Request bytes that are not a ModelInferRequest at all.
UNDECODABLE = {
    "garbage": bytes(range(256)),
    "truncated": pixels_request(ROW).SerializeToString()[:-7],
    "wrong wire type": b"\x0f\x01",
}


@pytest.fixture
def server(repository: Path, serve: Serve) -> ServerThread:
    write_probe(repository / "probe" / "1", probe_config())
    broken = repository / "broken" / "1"
    write_probe(broken, probe_config())
    (broken / "model.pt").write_bytes(b"garbage")
    return serve(repository, max_message_bytes=64 * 1024)


def _call(server: ServerThread, call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_its_status_and_a_message_naming_the_field(
    server: ServerThread, case: str
) -> None:
    request, code, message = BAD_REQUESTS[case]
    error = _call(server, lambda: server.stub.ModelInfer(request))
    assert error.code() == code
    assert message in (error.details() or "")


@pytest.mark.parametrize("case", UNDECODABLE)
def test_bytes_that_do_not_parse_are_invalid_argument_and_not_an_error_log(
    server: ServerThread, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.channel is not None
    infer = server.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=None,
        response_deserializer=None,
        _registered_method=True,
    )
    with caplog.at_level(logging.DEBUG):
        error = _call(server, lambda: infer(UNDECODABLE[case], timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid inference.ModelInferRequest message" in (error.details() or "")
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []


def test_oversized_metadata_is_refused(server: ServerThread) -> None:
    metadata = (("x-huge", "a" * 20_000),)
    error = _call(server, lambda: server.stub.ModelInfer(pixels_request(ROW), metadata=metadata))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "metadata" in (error.details() or "")


def test_server_stays_healthy_after_bad_requests(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        for request, _, _ in BAD_REQUESTS.values():
            _call(server, lambda request=request: server.stub.ModelInfer(request))  # type: ignore[misc]
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []
    assert server.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert server.stub.ModelInfer(pixels_request(ROW)).model_name == "digits"


def test_model_not_ready_is_unavailable_without_server_details(server: ServerThread) -> None:
    error = _call(server, lambda: server.stub.ModelInfer(probe_request(np.zeros((1, 4)), "broken")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = error.details() or ""
    assert "broken" in details
    assert "model.pt" not in details


def test_message_above_the_limit_is_resource_exhausted(server: ServerThread) -> None:
    big = np.zeros((64, 64 * 5), dtype=np.float32)  # 80 KiB > 64 KiB limit
    error = _call(server, lambda: server.stub.ModelInfer(raw_request("digits", {"pixels": big})))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_model_failure_is_internal_without_a_stack_trace(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    poison = np.full((1, 4), -5000.0)
    error = _call(server, lambda: server.stub.ModelInfer(probe_request(poison)))
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error.details() or ""
    assert "forward pass failed" in details
    assert "Traceback" not in details
    assert "asked to fail" not in details
    assert any("asked to fail" in (record.exc_text or "") for record in caplog.records)
    ok = server.stub.ModelInfer(probe_request(np.ones((1, 4))))
    assert ok.model_name == "probe"


VERSION_LOOKALIKES = {
    "superscript two": "\u00b2",  # a digit to str.isdigit(), refused by int()
    "Arabic-Indic one": "\u0661",  # int() reads it as 1
    "5,000 digits": "9" * 5_000,  # int() refuses more than 4,300
}


@pytest.mark.parametrize("version", VERSION_LOOKALIKES.values(), ids=VERSION_LOOKALIKES)
def test_a_version_is_ascii_digits_on_every_call(
    server: ServerThread, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.channel is not None
    monitoring = mon_grpc.ModelMonitoringStub(server.channel)
    label = mon_pb.FeedbackItem(id="r1", label="1")
    calls: dict[str, Callable[[], object]] = {
        "ModelInfer": lambda: server.stub.ModelInfer(pixels_request(ROW, version=version)),
        "ModelReady": lambda: server.stub.ModelReady(
            pb.ModelReadyRequest(name="digits", version=version)
        ),
        "ModelMetadata": lambda: server.stub.ModelMetadata(
            pb.ModelMetadataRequest(name="digits", version=version)
        ),
        "Feedback": lambda: monitoring.Feedback(
            mon_pb.FeedbackRequest(name="digits", version=version, items=[label])
        ),
    }
    with caplog.at_level(logging.DEBUG):
        for method, call in calls.items():
            error = _call(server, call)
            assert (method, error.code()) == (method, grpc.StatusCode.NOT_FOUND)
            assert error.details() == f"model 'digits' has no version {echo(version)}", method
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []


def _failing_observer(*_: object) -> None:
    raise RuntimeError("observer broke")


class _ObservedServicer(mon_grpc.ModelMonitoringServicer):
    """Two traced calls whose observer always raises: one answers, one fails."""

    @rpc(MONITORING_SERVICE, "ModelDrift", observe=_failing_observer)
    async def ModelDrift(  # noqa: N802
        self, request: mon_pb.ModelDriftRequest, context: grpc.aio.ServicerContext
    ) -> mon_pb.ModelDriftResponse:
        return mon_pb.ModelDriftResponse(report_json="{}")

    @rpc(MONITORING_SERVICE, "Feedback", observe=_failing_observer)
    async def Feedback(  # noqa: N802
        self, request: mon_pb.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> mon_pb.FeedbackResponse:
        raise ModelNotFoundError("model 'nope' is not in the repository")


@pytest.fixture
def observed() -> Iterator[mon_grpc.ModelMonitoringStub]:
    """A real grpc.aio server on port 0 serving `_ObservedServicer`."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        add_servicer(server, MONITORING_DESCRIPTOR, _ObservedServicer())
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield mon_grpc.ModelMonitoringStub(channel)
    asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_failing_observer_changes_no_answer_and_ends_the_span(
    observed: mon_grpc.ModelMonitoringStub,
    telemetry: TelemetryCapture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert observed.ModelDrift(mon_pb.ModelDriftRequest(name="x")).report_json == "{}"
    with pytest.raises(grpc.RpcError) as refused:
        observed.Feedback(mon_pb.FeedbackRequest(name="nope"))

    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == "model 'nope' is not in the repository"
    ended = {
        span.name: (span.attributes or {}).get("rpc.grpc.status_code")
        for span in telemetry.finished_spans()
    }
    assert ended == {
        f"{MONITORING_SERVICE}/ModelDrift": grpc.StatusCode.OK.value[0],
        f"{MONITORING_SERVICE}/Feedback": grpc.StatusCode.NOT_FOUND.value[0],
    }
    logged = [(r.getMessage(), r.exc_text) for r in caplog.records if r.levelno == logging.ERROR]
    assert [message for message, _ in logged] == [
        "observing ModelDrift failed",
        "observing Feedback failed",
    ]
    assert all("observer broke" in (trace or "") for _, trace in logged)
