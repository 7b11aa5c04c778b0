"""The Open Inference Protocol over REST, through a real gateway to a real model server."""

import re
from pathlib import Path

import numpy as np
import pytest

from model_server import digits
from tests.conftest import Serve
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.model_server.protocol import outputs, pixels_request

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def pixels() -> np.ndarray:
    return digits.load_split().x_test[:5]


def test_health_and_server_metadata(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository).address])
    with client(gateway) as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        ready = http.get("/v2/health/ready")
        metadata = http.get("/v2").json()
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert metadata["name"] == "inferwatch-gateway"
    assert metadata["extensions"] == ["binary_tensor_data"]


def test_model_metadata_with_and_without_version(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository).address])
    with client(gateway) as http:
        latest = http.get("/v2/models/digits").json()
        pinned = http.get("/v2/models/digits/versions/1").json()
    assert latest == pinned
    assert latest == {
        "name": "digits",
        "versions": ["1"],
        "platform": "pytorch_torchscript",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }


@pytest.mark.parametrize(
    ("path", "status", "ready"),
    [
        ("/v2/models/digits/ready", 200, True),
        ("/v2/models/digits/versions/1/ready", 200, True),
        ("/v2/models/digits/versions/7/ready", 400, False),
        ("/v2/models/no-such-model/ready", 400, False),
    ],
)
def test_model_readiness_is_the_status_code(
    path: str,
    status: int,
    ready: bool,
    repository: Path,
    serve: Serve,
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway([serve(repository).address])
    with client(gateway) as http:
        answer = http.get(path)
    assert (answer.status_code, answer.json()["ready"]) == (status, ready)


def test_inference_equals_the_model_servers_answer(
    repository: Path, serve: Serve, start_gateway: StartGateway, pixels: np.ndarray
) -> None:
    server = serve(repository)
    direct = outputs(server.stub.ModelInfer(pixels_request(pixels)))
    gateway = start_gateway([server.address])
    with client(gateway) as http:
        answer = http.post("/v2/models/digits/infer", json=infer_body(pixels, id="req-7"))
    assert answer.status_code == 200
    assert answer.headers["x-model-version"] == "1"
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("digits", "1", "req-7")
    by_name = {output["name"]: output for output in body["outputs"]}
    assert by_name["probabilities"]["shape"] == [5, 10]
    np.testing.assert_allclose(
        np.reshape(by_name["probabilities"]["data"], (5, 10)),
        direct["probabilities"],
        rtol=1e-5,
        atol=1e-8,
    )
    assert by_name["label"] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [5],
        "data": direct["label"].tolist(),
    }


def test_nested_data_requested_outputs_and_pinned_version(
    repository: Path, serve: Serve, start_gateway: StartGateway, pixels: np.ndarray
) -> None:
    gateway = start_gateway([serve(repository).address])
    body = infer_body(pixels, outputs=[{"name": "label"}])
    body["inputs"][0]["data"] = pixels.astype(np.float32).tolist()  # type: ignore[index]
    with client(gateway) as http:
        answer = http.post("/v2/models/digits/versions/1/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert [output["name"] for output in answer.json()["outputs"]] == ["label"]


def test_every_response_carries_its_trace_id(
    repository: Path, serve: Serve, start_gateway: StartGateway, pixels: np.ndarray
) -> None:
    gateway = start_gateway([serve(repository).address])
    with client(gateway) as http:
        answers = [
            http.get("/v2/health/live"),
            http.post("/v2/models/digits/infer", json=infer_body(pixels)),
            http.post("/v2/models/digits/infer", content=b"{"),
            http.get("/v2/models/no-such-model"),
            http.get("/no/such/route"),
            http.delete("/v2/health/live"),
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 400, 404, 404, 405]
    trace_ids = [answer.headers["x-trace-id"] for answer in answers]
    assert all(TRACE_ID.match(trace_id) for trace_id in trace_ids)
    assert len(set(trace_ids)) == len(trace_ids)
    for answer in answers[2:]:
        assert set(answer.json()) == {"error"}


def test_the_callers_trace_continues(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository).address])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with client(gateway) as http:
        answer = http.get(
            "/v2/health/live", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        )
    assert answer.headers["x-trace-id"] == trace_id


def test_not_ready_without_a_ready_model_server(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    server = serve(repository)
    server.stop()
    gateway = start_gateway([server.address], probe_timeout_s=0.5)
    with client(gateway) as http:
        ready = http.get("/v2/health/ready")
        live = http.get("/v2/health/live")
    assert (ready.status_code, ready.json()) == (400, {"ready": False})
    assert live.status_code == 200
