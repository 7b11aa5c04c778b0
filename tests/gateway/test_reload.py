"""A version loaded into a model server while it runs becomes reachable through the gateway."""

import shutil
from pathlib import Path

import numpy as np

from model_server.proto import model_repository_pb2 as repo_pb
from tests.conftest import Serve, wait_until
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.model_server.test_reload import publish, repository_stub

DIGITS = infer_body(np.zeros((1, 64)))


def test_a_version_loaded_on_one_of_two_model_servers_becomes_reachable(
    repository: Path,
    digits_version_dir: Path,
    tmp_path: Path,
    serve: Serve,
    start_gateway: StartGateway,
) -> None:
    shutil.copytree(digits_version_dir, tmp_path / "other" / "digits" / "1")
    loading, other = serve(repository), serve(tmp_path / "other")
    gateway = start_gateway([loading.address, other.address], readiness_ttl_s=0.1)
    with client(gateway) as http:
        assert http.post("/v2/models/digits/versions/2/infer", json=DIGITS).status_code == 404
        publish(digits_version_dir, repository / "digits" / "2")

        repository_stub(loading).RepositoryModelLoad(
            repo_pb.RepositoryModelLoadRequest(model_name="digits", model_version="2")
        )

        assert http.get("/v2/models/digits/versions/2/ready").status_code == 200
        # Within the readiness TTL the gateway learns which model server has it...
        wait_until(
            lambda: http.post("/v2/models/digits/versions/2/infer", json=DIGITS).status_code == 200
        )
        # ...and sends every request for it there (the other one would answer 404).
        answers = [http.post("/v2/models/digits/versions/2/infer", json=DIGITS) for _ in range(10)]
    assert [(a.status_code, a.headers["x-model-version"]) for a in answers] == [(200, "2")] * 10


def test_requests_through_the_gateway_follow_loads_and_unloads(
    repository: Path, digits_version_dir: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    server = serve(repository)
    gateway = start_gateway([server.address])
    repository_service = repository_stub(server)
    with client(gateway) as http:
        assert http.post("/v2/models/digits/infer", json=DIGITS).headers["x-model-version"] == "1"
        publish(digits_version_dir, repository / "digits" / "2")

        repository_service.RepositoryModelLoad(
            repo_pb.RepositoryModelLoadRequest(model_name="digits")
        )
        loaded = http.post("/v2/models/digits/infer", json=DIGITS)

        repository_service.RepositoryModelUnload(
            repo_pb.RepositoryModelUnloadRequest(model_name="digits", model_version="2")
        )
        unloaded = http.post("/v2/models/digits/infer", json=DIGITS)
        named = http.post("/v2/models/digits/versions/2/infer", json=DIGITS)
        ready = http.get("/v2/models/digits/versions/2/ready")

    assert (loaded.status_code, loaded.headers["x-model-version"]) == (200, "2")
    assert (unloaded.status_code, unloaded.headers["x-model-version"]) == (200, "1")
    assert named.status_code == 503
    assert named.json() == {"error": "model digits:2 is not ready (state UNLOADED)"}
    assert ready.status_code == 400
