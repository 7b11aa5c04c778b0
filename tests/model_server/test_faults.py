"""Server-side fault injection: off by default and refused, honoured only when the server was
started with it, over gRPC and through the gateway."""

import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from opentelemetry.trace import StatusCode

from model_server.faults import DELAY_MS, ERROR
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import Serve, ServerThread
from tests.gateway.servers import GatewayThread, gateway_settings
from tests.model_server.protocol import outputs, pixels_request
from tests.model_server.server_process import ServerProcess
from tests.telemetry_capture import TelemetryCapture

PIXELS = np.zeros((1, 64), dtype=np.float32)
INFER_SPAN = "inference.GRPCInferenceService/ModelInfer"


def _request(**parameters: pb.InferParameter) -> pb.ModelInferRequest:
    request = pixels_request(PIXELS)
    for name, value in parameters.items():
        request.parameters[name].CopyFrom(value)
    return request


def _error(value: bool) -> pb.InferParameter:
    return pb.InferParameter(bool_param=value)


def _delay(value: int) -> pb.InferParameter:
    return pb.InferParameter(int64_param=value)


def _rpc_error(server: ServerThread, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.ModelInfer(request, timeout=10)
    return caught.value


@pytest.fixture
def faulty(repository: Path, serve: Serve) -> ServerThread:
    return serve(repository, fault_injection=True)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({ERROR: _error(True)}, ERROR),
        ({ERROR: _error(False)}, ERROR),
        ({DELAY_MS: _delay(10)}, DELAY_MS),
    ],
)
def test_refused_when_the_server_was_not_started_with_it(
    repository: Path, serve: Serve, parameters: dict[str, pb.InferParameter], named: str
) -> None:
    error = _rpc_error(serve(repository), _request(**parameters))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        f"parameters.{named}: fault injection is off on this server "
        "(start it with MODEL_SERVER_FAULT_INJECTION=true or --fault-injection)"
    )


def test_other_parameters_do_not_matter(repository: Path, serve: Serve) -> None:
    request = _request(priority=pb.InferParameter(int64_param=1))

    response = serve(repository).stub.ModelInfer(request, timeout=10)

    assert outputs(response)["label"].shape == (1,)


def test_injected_error_is_a_server_fault_in_status_metrics_and_span(
    faulty: ServerThread, telemetry: TelemetryCapture
) -> None:
    requests = "inferwatch.server.requests"
    before = telemetry.total(requests, **{"model.name": "digits", "status": "INTERNAL"})

    error = _rpc_error(faulty, _request(**{ERROR: _error(True)}))

    assert error.code() is grpc.StatusCode.INTERNAL
    assert error.details() == f"injected fault (parameters.{ERROR} is true)"
    after = telemetry.total(requests, **{"model.name": "digits", "status": "INTERNAL"})
    assert after == before + 1
    (span,) = [s for s in telemetry.finished_spans() if s.name == INFER_SPAN]
    assert span.status.status_code is StatusCode.ERROR


def test_injected_delay_comes_before_a_normal_answer(faulty: ServerThread) -> None:
    started = time.monotonic()
    response = faulty.stub.ModelInfer(
        _request(**{DELAY_MS: _delay(300), ERROR: _error(False)}), timeout=10
    )

    assert time.monotonic() - started >= 0.3
    assert outputs(response)["label"].shape == (1,)


def test_delay_then_error(faulty: ServerThread) -> None:
    started = time.monotonic()
    error = _rpc_error(faulty, _request(**{DELAY_MS: _delay(200), ERROR: _error(True)}))

    assert error.code() is grpc.StatusCode.INTERNAL
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {DELAY_MS: _delay(-1)},
            f"parameters.{DELAY_MS}: must be an integer from 0 to 60000 (milliseconds), got -1",
        ),
        (
            {DELAY_MS: _delay(60_001)},
            f"parameters.{DELAY_MS}: must be an integer from 0 to 60000 (milliseconds), got 60001",
        ),
        (
            {DELAY_MS: pb.InferParameter(string_param="10")},
            f"parameters.{DELAY_MS}: must be an integer from 0 to 60000 (milliseconds), got '10'",
        ),
        (
            {DELAY_MS: _error(True)},
            f"parameters.{DELAY_MS}: must be an integer from 0 to 60000 (milliseconds), got True",
        ),
        ({ERROR: _delay(1)}, f"parameters.{ERROR}: must be true or false, got 1"),
    ],
)
def test_bad_fault_parameters_name_the_field(
    faulty: ServerThread, parameters: dict[str, pb.InferParameter], message: str
) -> None:
    error = _rpc_error(faulty, _request(**parameters))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message


def _rest_infer(gateway: GatewayThread, parameters: dict[str, object]) -> httpx.Response:
    body = {
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}],
        "parameters": parameters,
    }
    return httpx.post(f"{gateway.url}/v2/models/digits/infer", json=body, timeout=10)


def test_through_the_gateway(repository: Path, serve: Serve) -> None:
    plain = GatewayThread(gateway_settings([serve(repository).address]))
    faulty = GatewayThread(gateway_settings([serve(repository, fault_injection=True).address]))
    try:
        refused = _rest_infer(plain, {ERROR: True})
        failed = _rest_infer(faulty, {ERROR: True})
        delayed = _rest_infer(faulty, {DELAY_MS: 50})
    finally:
        plain.stop()
        faulty.stop()

    assert refused.status_code == 400
    assert f"parameters.{ERROR}: fault injection is off" in refused.json()["error"]
    assert failed.status_code == 500
    assert delayed.status_code == 200
    assert delayed.json()["outputs"][1]["name"] == "label"


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--fault-injection"], {}), ([], {"MODEL_SERVER_FAULT_INJECTION": "true"})],
)
def test_switched_on_by_flag_or_environment(
    repository: Path, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    process = ServerProcess(
        tmp_path,
        "--grpc-port",
        "0",
        "--model-repository",
        str(repository),
        *args,
        env={"MODEL_SERVER_CREATE_DEFAULT_MODEL": "false", **env},
    )
    try:
        address = process.wait_ready()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(_request(**{ERROR: _error(True)}), timeout=10)
        assert caught.value.code() is grpc.StatusCode.INTERNAL
        assert process.terminate() == 0
    finally:
        process.kill()
