"""Several model servers: each request goes to one that has the model ready, round robin."""

import shutil
from pathlib import Path

import numpy as np

from tests.conftest import Serve
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.model_server.test_models import probe_config, write_probe
from tests.otel.support import free_port
from tests.telemetry_capture import TelemetryCapture

DIGITS = infer_body(np.zeros((1, 64)))
PROBE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}


def _calls(telemetry: TelemetryCapture, backend: str) -> float:
    """ModelInfer calls the gateway sent to this model server so far."""
    return telemetry.total(
        "inferwatch.gateway.upstream.duration", backend=backend, **{"rpc.method": "ModelInfer"}
    )


def test_each_model_goes_to_the_model_server_that_has_it(
    repository: Path,
    tmp_path: Path,
    serve: Serve,
    start_gateway: StartGateway,
    telemetry: TelemetryCapture,
) -> None:
    write_probe(tmp_path / "probes" / "probe" / "1", probe_config())
    digits_server, probe_server = serve(repository), serve(tmp_path / "probes")
    gateway = start_gateway([digits_server.address, probe_server.address])
    before = {a: _calls(telemetry, a) for a in (digits_server.address, probe_server.address)}
    with client(gateway) as http:
        statuses = [
            http.post(f"/v2/models/{model}/infer", json=body).status_code
            for model, body in [("digits", DIGITS), ("probe", PROBE)] * 10
        ]
    assert statuses == [200] * 20
    assert _calls(telemetry, digits_server.address) - before[digits_server.address] == 10
    assert _calls(telemetry, probe_server.address) - before[probe_server.address] == 10


def test_round_robin_over_the_model_servers_that_have_the_model(
    repository: Path,
    digits_version_dir: Path,
    tmp_path: Path,
    serve: Serve,
    start_gateway: StartGateway,
    telemetry: TelemetryCapture,
) -> None:
    shutil.copytree(digits_version_dir, tmp_path / "copy" / "digits" / "1")
    servers = [serve(repository).address, serve(tmp_path / "copy").address]
    gateway = start_gateway(servers)
    before = [_calls(telemetry, address) for address in servers]
    with client(gateway) as http:
        statuses = [http.post("/v2/models/digits/infer", json=DIGITS).status_code for _ in "x" * 10]
    assert statuses == [200] * 10
    assert [_calls(telemetry, a) - b for a, b in zip(servers, before, strict=True)] == [5, 5]


def test_requests_pass_a_model_server_that_is_down(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([f"127.0.0.1:{free_port()}", serve(repository).address])
    with client(gateway) as http:
        statuses = [http.post("/v2/models/digits/infer", json=DIGITS).status_code for _ in "x" * 6]
        metadata = http.get("/v2/models/digits").status_code
        ready = http.get("/v2/health/ready").json()
    assert (statuses, metadata, ready) == ([200] * 6, 200, {"ready": True})


def test_requests_keep_succeeding_when_a_model_server_stops(
    repository: Path,
    digits_version_dir: Path,
    tmp_path: Path,
    serve: Serve,
    start_gateway: StartGateway,
) -> None:
    shutil.copytree(digits_version_dir, tmp_path / "copy" / "digits" / "1")
    staying, leaving = serve(repository), serve(tmp_path / "copy")
    gateway = start_gateway([staying.address, leaving.address])
    with client(gateway) as http:
        before = [http.post("/v2/models/digits/infer", json=DIGITS).status_code for _ in "xyz"]
        leaving.stop()
        after = [http.post("/v2/models/digits/infer", json=DIGITS).status_code for _ in "xyzxyz"]
    assert before + after == [200] * 9


def test_a_model_whose_model_server_is_down_is_503_not_404(
    repository: Path, tmp_path: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    write_probe(tmp_path / "probes" / "probe" / "1", probe_config())
    digits_server, probe_server = serve(repository), serve(tmp_path / "probes")
    gateway = start_gateway([digits_server.address, probe_server.address])
    with client(gateway) as http:
        unknown = http.post("/v2/models/nope/infer", json=DIGITS)
        digits_server.stop()
        # A fresh check: no model server has digits ready, so every one is asked; the one
        # without digits answers NOT_FOUND, first or second (round robin).
        ready = http.get("/v2/models/digits/ready").status_code
        answers = [http.post("/v2/models/digits/infer", json=DIGITS) for _ in "xy"]
        answers.append(http.get("/v2/models/digits"))
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "model 'nope' is not in the repository"},
    )
    assert ready == 400
    for answer in answers:
        assert (answer.status_code, answer.json()) == (
            503,
            {
                "error": "model server unreachable; retry later. It may have the model; the "
                "model servers that answered do not (model 'digits' is not in the repository)"
            },
        )
