"""GET /v2/models/{name}/drift: the model server's fresh drift report, through the gateway."""

from pathlib import Path

import pytest

from gateway.errors import BadGatewayError
from gateway.upstream import _reported_version
from model_server import digits
from tests.conftest import Serve
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.model_server.test_models import probe_config, write_probe


def test_drift_report_through_the_gateway(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    write_probe(repository / "probe" / "1", probe_config())
    gateway = start_gateway([serve(repository).address])
    with client(gateway) as http:
        empty = http.get("/v2/models/digits/drift")
        assert empty.status_code == 200
        assert empty.headers["content-type"] == "application/json"
        assert empty.json()["status"] == "insufficient_data"

        inverted = 16.0 - digits.load_split().x_test[:160]
        for start in range(0, len(inverted), 32):
            answer = http.post(
                "/v2/models/digits/infer", json=infer_body(inverted[start : start + 32])
            )
            assert answer.status_code == 200
        report = http.get("/v2/models/digits/versions/1/drift").json()
        assert report["status"] == "drift"
        assert report["window"]["rows"] == 160
        assert report["model"] == "digits"

        unknown = http.get("/v2/models/nope/drift")
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["error"]
        no_reference = http.get("/v2/models/probe/drift")
        assert no_reference.status_code == 404
        assert "no drift reference" in no_reference.json()["error"]


@pytest.mark.parametrize("report_json", ["", "not json", "[1, 2]", '"drift"'])
def test_a_drift_report_that_is_not_a_json_object_is_the_model_servers_fault(
    report_json: str,
) -> None:
    with pytest.raises(BadGatewayError, match="drift report that is not a JSON object"):
        _reported_version(report_json, "1")


def test_a_drift_report_names_its_version() -> None:
    assert _reported_version('{"version": 2, "status": "ok"}', "") == "2"
    assert _reported_version('{"status": "ok"}', "3") == "3"
