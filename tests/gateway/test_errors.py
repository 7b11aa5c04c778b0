"""Every failure gets its HTTP status and `{"error": "..."}` naming the field or the reason."""

import json
import logging
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from opentelemetry.trace import StatusCode

from gateway.core import GatewayCore
from model_server.proto import grpc_service_pb2 as pb
from tests.conftest import Serve, wait_until
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.gateway.servers import GatewayThread
from tests.model_server.test_models import probe_config, write_probe
from tests.otel.support import free_port
from tests.telemetry_capture import TelemetryCapture

ZEROS = np.zeros((1, 64))
SLOW = {"model.name": "slow", "model.version": "1"}


def _digits(data: object, shape: list[int] | None = None, datatype: str = "FP32") -> object:
    return {
        "inputs": [
            {"name": "pixels", "shape": shape or [1, 64], "datatype": datatype, "data": data}
        ]
    }


@pytest.fixture
def gateway(repository: Path, serve: Serve, start_gateway: StartGateway) -> GatewayThread:
    """A gateway in front of digits and `slow` (a probe that waits 300 ms for its batch and
    queues one request at most), with a small body limit."""
    write_probe(repository / "slow" / "1", probe_config(delay_ms=300, queue_size=1))
    return start_gateway([serve(repository).address], max_message_bytes=4096)


@pytest.fixture
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Client mistakes are never logged above INFO."""
    with caplog.at_level(logging.DEBUG):
        yield
    # At teardown `caplog.records` holds the teardown's records only: ask for the test's.
    logged = [r.getMessage() for r in caplog.get_records("call") if r.levelno > logging.INFO]
    assert logged == []


@pytest.mark.usefixtures("no_error_logs")
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", "body: Invalid JSON: EOF while parsing an object"),
        (b"[]", "body: Input should be an object"),
        (b"{}", "inputs: Field required"),
        (b'{"inputs": []}', "inputs: List should have at least 1 item"),
        (_digits([0.0] * 63), "inputs[0].data: holds 63 values; shape [1, 64] needs 64"),
        (_digits([0.0, 1, "2"] + [0.0] * 61), "inputs[0].data[2]: '2' is not valid for FP32"),
        (_digits([[0.0] * 63 + [None]]), "inputs[0].data[0][63]: None is not valid for FP32"),
        (
            _digits([[0.0] * 64, [0.0] * 28], [2, 64]),
            "inputs[0].data[1]: holds 28 values; shape [2, 64] needs 64",
        ),
        (  # 128 values in all, as [2, 64] needs, but not in rows of 64
            _digits([[0.0] * 100, [0.0] * 28], [2, 64]),
            "inputs[0].data[0]: holds 100 values; shape [2, 64] needs 64",
        ),
        (_digits([[1.0, 2.0], 3.0], [3]), "inputs[0].data: holds 2 values; shape [3] needs 3"),
        (
            _digits([[1.0, 2.0], 3.0], [2, 2]),
            "inputs[0].data[1]: 3.0 is not an array; shape [2, 2] needs an array of 2",
        ),
        (
            _digits([70000.0] * 64, datatype="FP16"),
            "inputs[0].data: a value is out of range for FP16",
        ),
        (_digits([1e39] * 64), "inputs[0].data: a value is out of range for FP32"),
        (_digits([1.5], [1], "INT64"), "inputs[0].data[0]: 1.5 is not valid for INT64"),
        (_digits([300], [1], "INT8"), "inputs[0].data: a value is out of range for INT8"),
        (_digits([0.0] * 64, datatype="FP8"), "inputs[0].datatype: 'FP8' is not supported"),
        (_digits([0.0] * 64, datatype="BYTES"), "inputs[0].datatype: 'BYTES' is not supported"),
        (_digits([0.0] * 64, [-1, 64]), "inputs[0].shape[0]: Input should be greater than"),
        (_digits([], [0, 2**70]), "inputs[0].shape[1]: Input should be less than or equal to"),
        *(  # a dimension is a JSON integer, as strict as the data
            (
                {
                    "inputs": [
                        {"name": "pixels", "shape": [dim, 64], "datatype": "FP32", "data": []}
                    ]
                },
                "inputs[0].shape[0]: Input should be a valid integer",
            )
            for dim in (True, "1", 1.0)
        ),
        (_digits(7), "inputs[0].data: Value error, must be an array"),
        (
            {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "dat": [1.0]}]},
            "inputs[0].dat: Extra inputs are not permitted",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32"}]},
            "inputs[0].data: missing",
        ),
        (
            {**infer_body(ZEROS), "parameters": {"x": {"nested": 1}}},
            "parameters.x: Value error, a parameter must be a boolean, a number or a string",
        ),
        (
            {**infer_body(ZEROS), "parameters": {"timeout": -5}},
            "parameters.timeout: must be a positive integer (microseconds)",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 64],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 256},
                    }
                ]
            },
            "inputs[0].parameters.binary_data_size: needs the Inference-Header-Content-Length",
        ),
        # Checked by the model server, passed through: it names the tensor.
        (_digits([0.0] * 63, [1, 63]), "input 'pixels': shape [1, 63] does not match"),
        (
            {"inputs": [{"name": "pixel", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]},
            "pixel",
        ),
    ],
)
def test_bad_requests_get_400_naming_the_field(
    body: bytes | object, error: str, gateway: GatewayThread
) -> None:
    with client(gateway) as http:
        if isinstance(body, bytes):
            answer = http.post("/v2/models/digits/infer", content=body)
        else:
            answer = http.post("/v2/models/digits/infer", json=body)
    assert answer.status_code == 400, answer.text
    assert list(answer.json()) == ["error"]
    assert error in answer.json()["error"]


@pytest.mark.usefixtures("no_error_logs")
def test_a_bad_timeout_header_gets_400(gateway: GatewayThread) -> None:
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/infer", json=infer_body(ZEROS), headers={"x-request-timeout": "0"}
        )
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("header.x-request-timeout: Input should be greater")


@pytest.mark.usefixtures("no_error_logs")
@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/v2/models/nope/infer", 404, "model 'nope' is not in the repository"),
        ("/v2/models/digits/versions/9/infer", 404, "model 'digits' has no version '9'"),
        ("/v2/models/nope", 404, "model 'nope' is not in the repository"),
        ("/no/such/route", 404, "Not Found"),
        ("/v2/health/live", 405, "Method Not Allowed"),
    ],
)
def test_unknown_models_and_routes(
    path: str, status: int, error: str, gateway: GatewayThread
) -> None:
    with client(gateway) as http:
        method = "GET" if path == "/v2/models/nope" else "POST"
        answer = http.request(method, path, json=infer_body(ZEROS))
    assert (answer.status_code, answer.json()) == (status, {"error": error})


@pytest.mark.usefixtures("no_error_logs")
def test_a_full_queue_is_429(gateway: GatewayThread) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}

    def send(_: int) -> httpx.Response:
        with client(gateway) as http:
            return http.post("/v2/models/slow/infer", json=body)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(send, range(3)))
    rejected = [answer for answer in answers if answer.status_code == 429]
    assert rejected, [answer.status_code for answer in answers]
    assert "queue" in rejected[0].json()["error"]
    assert rejected[0].headers["retry-after"] == "1"


@pytest.mark.usefixtures("no_error_logs")
def test_beyond_max_concurrent_inferences_is_429_at_once(
    repository: Path, serve: Serve, start_gateway: StartGateway, telemetry: TelemetryCapture
) -> None:
    write_probe(repository / "slow" / "1", probe_config(delay_ms=500))
    gateway = start_gateway([serve(repository).address], max_concurrent_inferences=2)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}

    def send(_: int) -> httpx.Response:
        with client(gateway) as http:
            return http.post("/v2/models/slow/infer", json=body)

    with ThreadPoolExecutor(2) as pool:
        held = list(map(pool.submit, [send] * 2, range(2)))
        wait_until(lambda: telemetry.total("inferwatch.batch.queue.depth", **SLOW) == 2)
        with client(gateway) as http:
            refused = http.post("/v2/models/slow/infer", json=body)
            refused_version = http.post("/v2/models/slow/versions/1/infer", json=body)
            metadata = http.get("/v2/models/slow")  # only inference is limited
        answers = [future.result() for future in held]
    assert (refused.status_code, refused_version.status_code) == (429, 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {
        "error": "gateway busy: 2 inference requests in flight, the most it takes at once "
        "(GATEWAY_MAX_CONCURRENT_INFERENCES=2); retry later"
    }
    assert metadata.status_code == 200
    assert [answer.status_code for answer in answers] == [200, 200]
    refusals = {  # counted and traced under their route, like any answer
        (p.attributes or {}).get("http.route")
        for p in telemetry.points("http.server.request.duration")
        if (p.attributes or {}).get("http.response.status_code") == 429
    }
    assert refusals == {
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    }
    with client(gateway) as http:  # the two have left: room again
        assert http.post("/v2/models/digits/infer", json=infer_body(ZEROS)).status_code == 200


@pytest.mark.usefixtures("no_error_logs")
@pytest.mark.parametrize(
    ("headers", "parameters"),
    [({"x-request-timeout": "0.05"}, {}), ({}, {"timeout": 50_000})],
    ids=["header", "parameter"],
)
def test_the_clients_timeout_is_the_deadline(
    headers: dict[str, str], parameters: dict[str, int], gateway: GatewayThread
) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}],
        "parameters": parameters,
    }
    with client(gateway) as http:
        answer = http.post("/v2/models/slow/infer", json=body, headers=headers)
    assert answer.status_code == 504
    assert answer.json() == {"error": "the model server did not answer within the timeout"}


def test_a_failing_model_is_500_with_the_model_servers_message(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    write_probe(repository / "probe" / "1", probe_config())
    gateway = start_gateway([serve(repository).address])
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [-2000.0] * 4}]}
    with client(gateway) as http:
        answer = http.post("/v2/models/probe/infer", json=body)
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("model server answered INTERNAL: ")


def test_a_model_server_that_is_down_is_503(start_gateway: StartGateway) -> None:
    gateway = start_gateway([f"127.0.0.1:{free_port()}"])
    with client(gateway) as http:
        answers = [
            http.post("/v2/models/digits/infer", json=infer_body(ZEROS)),
            http.get("/v2/models/digits"),
        ]
    for answer in answers:
        assert (answer.status_code, answer.json()) == (
            503,
            {"error": "model server unreachable; retry later"},
        )


@pytest.mark.usefixtures("no_error_logs")
def test_a_body_above_the_limit_is_413(gateway: GatewayThread) -> None:
    big = b" " * 5000

    def chunks() -> Iterator[bytes]:
        yield big  # no Content-Length: the limit is counted while reading

    with client(gateway) as http:
        declared = http.post("/v2/models/digits/infer", content=big)
        streamed = http.post("/v2/models/digits/infer", content=chunks())
    assert "content-length" not in streamed.request.headers
    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert answer.json()["error"].endswith("above the limit of 4096 bytes")


def test_an_unexpected_error_is_500_logged_with_its_trace(
    gateway: GatewayThread,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    telemetry: TelemetryCapture,
) -> None:
    def broken(self: GatewayCore) -> pb.ServerMetadataResponse:
        raise RuntimeError("bug")

    monkeypatch.setattr(GatewayCore, "server_metadata", broken)
    with client(gateway) as http, caplog.at_level(logging.ERROR):
        answer = http.get("/v2")
    assert (answer.status_code, answer.json()) == (
        500,
        {"error": "internal error; see the gateway log"},
    )
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
    wait_until(lambda: any(s.name == "GET /v2" for s in telemetry.finished_spans()))
    [span] = [s for s in telemetry.finished_spans() if s.name == "GET /v2"]
    assert f"{span.context.trace_id:032x}" == answer.headers["x-trace-id"]
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.usefixtures("no_error_logs")
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_are_refused_by_a_finite_only_input(
    gateway: GatewayThread, value: str
) -> None:
    body = '{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [%s]}]}'
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/infer",
            content=body % ", ".join([value] + ["0"] * 63),
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 400
    assert "input 'pixels': row 0 holds NaN or infinite values" in answer.json()["error"]


@pytest.mark.usefixtures("no_error_logs")
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_json_or_binary_tensors_is_415(
    gateway: GatewayThread, content_type: str
) -> None:
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/infer",
            json=infer_body(ZEROS),
            headers={"content-type": content_type},
        )
    assert answer.status_code == 415
    assert answer.json()["error"].startswith(f"header.content-type: '{content_type}'")


@pytest.mark.usefixtures("no_error_logs")
@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/ld+json"])
def test_json_media_types_are_accepted(gateway: GatewayThread, content_type: str) -> None:
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/infer",
            json=infer_body(ZEROS),
            headers={"content-type": content_type},
        )
    assert answer.status_code == 200, answer.text


@pytest.mark.usefixtures("no_error_logs")
def test_a_huge_header_value_is_refused_and_the_gateway_keeps_serving(
    gateway: GatewayThread,
) -> None:
    with client(gateway) as http:
        huge = http.post(
            "/v2/models/digits/infer", json=infer_body(ZEROS), headers={"x-huge": "a" * 200_000}
        )
        after = http.post("/v2/models/digits/infer", json=infer_body(ZEROS))
    assert huge.status_code == 431
    assert "header 'x-huge' alone holds 200000 bytes" in huge.json()["error"]
    assert after.status_code == 200


@pytest.mark.usefixtures("no_error_logs")
def test_binary_tensors_without_the_json_length_header_are_a_400(gateway: GatewayThread) -> None:
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/infer",
            content=json.dumps(infer_body(ZEROS)),
            headers={"content-type": "application/octet-stream"},
        )
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "header.inference-header-content-length: required with application/octet-stream"},
    )


@pytest.mark.usefixtures("no_error_logs")
def test_feedback_takes_json_only(gateway: GatewayThread) -> None:
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/feedback",
            content=json.dumps({"items": [{"id": "x", "label": "1"}]}),
            headers={"content-type": "application/octet-stream"},
        )
    assert (answer.status_code, answer.json()) == (
        415,
        {
            "error": "header.content-type: 'application/octet-stream' is not supported; "
            "send application/json"
        },
    )


@pytest.mark.usefixtures("no_error_logs")
def test_a_body_that_encodes_above_the_message_limit_is_413(gateway: GatewayThread) -> None:
    # "0," is 2 bytes of JSON and 4 of FP32: a 3 KiB body becomes a 6 KiB gRPC message.
    body = json.dumps(_digits([0] * 24 * 64, [24, 64]), separators=(",", ":"))
    assert len(body) < 4096
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/infer", content=body, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 413
    assert re.fullmatch(
        r"body: the request encodes to a 6\d{3}-byte gRPC message, above the gateway's limit "
        r"of 4096 bytes",
        answer.json()["error"],
    )


@pytest.mark.usefixtures("no_error_logs")
def test_a_request_above_the_model_servers_message_limit_is_413(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository, max_message_bytes=8192).address])
    with client(gateway) as http:
        answer = http.post("/v2/models/digits/infer", json=_digits([0] * 40 * 64, [40, 64]))
    assert answer.status_code == 413
    assert re.fullmatch(
        r"body: the request encodes to a 10\d{3}-byte gRPC message, above the model server's "
        r"limit of 8192 bytes",
        answer.json()["error"],
    )


def test_an_answer_above_the_message_limit_is_502(
    repository: Path, serve: Serve, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    write_probe(repository / "probe" / "1", probe_config(max_batch_size=256))
    gateway = start_gateway([serve(repository).address], max_message_bytes=4096)
    # 3.2 kB of FP32 in, twice that out (the probe answers x * 2 and two INT64 per row).
    body = {"inputs": [{"name": "x", "shape": [200, 4], "datatype": "FP32", "data": [1] * 800}]}
    with client(gateway) as http, caplog.at_level(logging.INFO):
        answer = http.post("/v2/models/probe/infer", json=body)
    assert answer.status_code == 502
    assert re.fullmatch(
        r"the model server's answer of 6\d{3} bytes is above the gateway's limit of 4096 bytes",
        answer.json()["error"],
    )
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []


def test_an_output_json_cannot_express_is_a_500_unless_asked_for_as_binary(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    write_probe(repository / "probe" / "1", probe_config())
    gateway = start_gateway([serve(repository).address])
    # The probe doubles its input: 3e38 * 2 is above FP32's range, infinity.
    inputs = [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [3e38] * 4}]
    binary_output = [{"name": "y", "parameters": {"binary_data": True}}]
    with client(gateway) as http:
        as_json = http.post("/v2/models/probe/infer", json={"inputs": inputs})
        as_binary = http.post(
            "/v2/models/probe/infer", json={"inputs": inputs, "outputs": binary_output}
        )
    assert (as_json.status_code, as_json.json()) == (
        500,
        {
            "error": "output 'y': holds NaN or infinite values, which JSON cannot express; ask "
            "for it as binary data (parameters.binary_data: true on the output)"
        },
    )
    assert as_binary.status_code == 200
    json_length = int(as_binary.headers["inference-header-content-length"])
    assert np.isposinf(np.frombuffer(as_binary.content[json_length:], "<f4")).all()


def test_a_client_that_leaves_mid_upload_is_499_without_an_error(
    repository: Path,
    serve: Serve,
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
    telemetry: TelemetryCapture,
) -> None:
    gateway = start_gateway([serve(repository).address], access_log=True)
    host, port = gateway.url.removeprefix("http://").split(":")
    route = "POST /v2/models/{model_name}/infer"
    with caplog.at_level(logging.DEBUG):
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(
                b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: gateway\r\n"
                b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                b'{"inputs": ['
            )
        wait_until(lambda: any(s.name == route for s in telemetry.finished_spans()))
    [span] = [s for s in telemetry.finished_spans() if s.name == route]
    assert (span.attributes or {})["http.response.status_code"] == 499
    assert span.status.status_code is StatusCode.UNSET
    [point] = [
        p
        for p in telemetry.points("http.server.request.duration")
        if (p.attributes or {}).get("http.response.status_code") == 499
    ]
    assert "error.type" not in (point.attributes or {})
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []
    assert any(
        r.getMessage().startswith("POST /v2/models/digits/infer 499 ") for r in caplog.records
    )
