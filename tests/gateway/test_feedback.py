"""POST /v2/models/{name}/feedback: true labels through the gateway, to the model server that
made the prediction, into the live quality metrics on a real Prometheus scrape."""

import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from model_server import digits
from tests.conftest import Serve, StartPrometheus
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.gateway.servers import GatewayThread
from tests.model_server.protocol import raw_request
from tests.model_server.server_process import ServerProcess
from tests.model_server.test_models import probe_config, write_probe, write_softmax
from tests.prometheus import Prometheus
from tests.telemetry_capture import TelemetryCapture

SERVER_ITEMS = "inferwatch.feedback.items"
GATEWAY_ITEMS = "inferwatch.gateway.feedback.items"


def _predict(http: httpx.Client, pixels: np.ndarray, path: str = "/v2/models/digits/infer") -> Any:
    """One REST inference of one digit; its JSON body (the id, the trace id, the label)."""
    answer = http.post(path, json=infer_body(pixels, outputs=[{"name": "label"}]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["parameters"]["inferwatch_trace_id"] == answer.headers["x-trace-id"]
    return body


def _label(body: Any) -> int:
    return int(body["outputs"][0]["data"][0])


def _path(expression: str) -> str:
    return f"/api/v1/query?{urllib.parse.urlencode({'query': expression})}"


def _value(answer: Any) -> float | None:
    """The value of an instant query's first series; None while there is none."""
    if not answer or answer.get("status") != "success" or not answer["data"]["result"]:
        return None
    return float(answer["data"]["result"][0]["value"][1])


def _query(prometheus: Prometheus, expression: str) -> float | None:
    return _value(prometheus.get(_path(expression)))


def test_labels_through_the_gateway_become_accuracy_on_a_prometheus_scrape(
    repository: Path,
    tmp_path: Path,
    start_gateway: StartGateway,
    start_prometheus: StartPrometheus,
) -> None:
    process = ServerProcess(
        tmp_path, "--grpc-port", "0", "--model-repository", str(repository),
        env={"MODEL_SERVER_FEEDBACK_INTERVAL_S": "0.5"},
    )  # fmt: skip
    try:
        gateway = start_gateway([process.wait_ready()])
        prometheus = start_prometheus(process.metrics_port)
        split = digits.load_split()
        pixels, truth = split.x_test[:60], split.y_test[:60].copy()
        truth[::4] = (truth[::4] + 3) % 10  # a quarter disagree with the model
        with client(gateway) as http:
            bodies = [_predict(http, pixels[i : i + 1]) for i in range(60)]
            items = [{"id": b["id"], "label": str(t)} for b, t in zip(bodies, truth, strict=True)]
            answer = http.post("/v2/models/digits/feedback", json={"items": items})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        predicted = np.array([_label(body) for body in bodies])
        assert [r["result"] for r in results] == ["ok"] * 60
        assert [r["correct"] for r in results] == (predicted == truth).tolist()
        assert [r["trace_id"] for r in results] == [
            b["parameters"]["inferwatch_trace_id"] for b in bodies
        ]
        assert [r["id"] for r in results] == [b["id"] for b in bodies]

        expected = accuracy_score(truth, predicted)
        selector = '{model_name="digits",model_version="1"}'
        accuracy = "inferwatch_feedback_accuracy_ratio" + selector
        prometheus.poll(_path(accuracy), lambda a: _value(a) is not None, timeout_s=30)
        assert _query(prometheus, accuracy) == pytest.approx(expected, abs=1e-9)
        assert _query(prometheus, "inferwatch_feedback_macro_f1_ratio" + selector) == (
            pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-9)
        )
        assert _query(prometheus, "inferwatch_feedback_window_labels" + selector) == 60
        assert _query(prometheus, "inferwatch_feedback_labelled_ratio" + selector) == 1.0
        ok = 'inferwatch_feedback_items_total{model_name="digits",result="ok"}'
        assert _query(prometheus, ok) == 60
    finally:
        process.kill()


@pytest.fixture
def gateway(repository: Path, serve: Serve, start_gateway: StartGateway) -> GatewayThread:
    """A gateway in front of one model server with digits (versions 1 and 2) and probe."""
    shutil.copytree(repository / "digits" / "1", repository / "digits" / "2")
    write_probe(repository / "probe" / "1", probe_config())
    return start_gateway([serve(repository).address])


def test_item_errors_come_back_in_a_200(gateway: GatewayThread) -> None:
    with client(gateway) as http:
        one = _predict(http, np.zeros((1, 64)), "/v2/models/digits/versions/1/infer")
        two = _predict(http, np.zeros((1, 64)))  # the newest version: 2
        answer = http.post(
            "/v2/models/digits/feedback",
            json={
                "items": [
                    {"id": one["id"], "label": str(_label(one))},
                    {"id": one["id"], "label": "1"},
                    {"id": "never-made", "label": "1"},
                    {"id": two["id"], "label": "eleven"},
                    {"id": two["id"], "label": "1", "row": 1},
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        ok, duplicate, unknown, invalid_label, invalid_row = answer.json()["results"]
        assert ok == {
            "id": one["id"],
            "row": 0,
            "result": "ok",
            "model_version": "1",
            "predicted_label": str(_label(one)),
            "confidence": pytest.approx(ok["confidence"]),
            "correct": True,
            "trace_id": one["parameters"]["inferwatch_trace_id"],
        }
        assert 0 < ok["confidence"] <= 1
        assert duplicate["result"] == "duplicate"
        assert duplicate["message"].startswith("items[1]: row 0 of prediction")
        assert unknown == {
            "id": "never-made",
            "row": 0,
            "result": "unknown_id",
            "message": "items[2].id: no prediction 'never-made' is kept (never made here, or "
            "removed long ago)",
        }
        assert invalid_label["result"] == "invalid_label"
        assert invalid_label["message"].startswith("items[3].label: 'eleven' is not a label")
        assert invalid_row["result"] == "invalid_row"

        pinned = http.post(
            "/v2/models/digits/versions/1/feedback",
            json={"items": [{"id": two["id"], "label": "1"}]},
        )
        assert pinned.status_code == 200
        assert pinned.json()["results"][0]["result"] == "other_model"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/digits/feedback", {"items": []}, 400, "items: List should have at least 1"),
        ("/v2/models/digits/feedback", {"items": [{"id": "x"}]}, 400, "items[0].label: Field"),
        ("/v2/models/digits/feedback", {"items": [{"id": "x", "label": 3}]}, 400, "items[0].label"),
        ("/v2/models/digits/feedback", {"itemz": []}, 400, "items: Field required"),
        ("/v2/models/nope/feedback", {"items": [{"id": "x", "label": "1"}]}, 404, "'nope'"),
        ("/v2/models/probe/feedback", {"items": [{"id": "x", "label": "1"}]}, 404, "keeps no"),
        ("/v2/models/digits/versions/9/feedback", {"items": [{"id": "x", "label": "1"}]}, 404,
         "no version '9'"),
    ],
)  # fmt: skip
def test_whole_request_errors(
    gateway: GatewayThread, path: str, body: object, status: int, message: str
) -> None:
    with client(gateway) as http:
        answer = http.post(path, json=body)
    assert answer.status_code == status
    assert message in answer.json()["error"]


def test_malformed_json_is_a_400(gateway: GatewayThread) -> None:
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/feedback",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == "body: Invalid JSON: key must be a string at line 1 column 2"


def test_feedback_needs_an_api_key_like_inference(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository).address], api_keys=["k-1"])
    body = {"items": [{"id": "x", "label": "1"}]}
    with client(gateway) as http:
        refused = http.post("/v2/models/digits/feedback", json=body)
        allowed = http.post(
            "/v2/models/digits/feedback", json=body, headers={"Authorization": "Bearer k-1"}
        )
    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert allowed.json()["results"][0]["result"] == "unknown_id"


def test_feedback_reaches_the_model_server_that_made_the_prediction(
    repository: Path,
    digits_version_dir: Path,
    tmp_path: Path,
    serve: Serve,
    start_gateway: StartGateway,
    telemetry: TelemetryCapture,
) -> None:
    shutil.copytree(digits_version_dir, tmp_path / "copy" / "digits" / "1")
    first, second = serve(repository), serve(tmp_path / "copy")
    gateway = start_gateway([first.address, second.address])

    def counted() -> dict[tuple[str, str], float]:
        """Items counted by both model servers together, and by the gateway, per result."""
        return {
            (metric, result): telemetry.total(metric, **{"model.name": "digits", "result": result})
            for metric in (SERVER_ITEMS, GATEWAY_ITEMS)
            for result in ("ok", "unknown_id", "unavailable")
        }

    before = counted()
    with client(gateway) as http:
        bodies = [_predict(http, np.zeros((1, 64))) for _ in range(8)]
        assert first.server.feedback is not None
        assert second.server.feedback is not None
        assert (first.server.feedback.stored, second.server.feedback.stored) == (4, 4)
        items = [{"id": body["id"], "label": str(_label(body))} for body in bodies]
        answer = http.post("/v2/models/digits/feedback", json={"items": items})
        assert [r["result"] for r in answer.json()["results"]] == ["ok"] * 8
        # Each label was unknown to one of the two model servers: not their failure to count.
        after = counted()
        assert {key: after[key] - before[key] for key in before} == {
            (SERVER_ITEMS, "ok"): 8,
            (SERVER_ITEMS, "unknown_id"): 0,
            (SERVER_ITEMS, "unavailable"): 0,
            (GATEWAY_ITEMS, "ok"): 8,
            (GATEWAY_ITEMS, "unknown_id"): 0,
            (GATEWAY_ITEMS, "unavailable"): 0,
        }

        later = [_predict(http, np.zeros((1, 64))) for _ in range(4)]
        kept_by_first = {
            body["id"]
            for body in later
            if first.server.feedback.store.find(body["id"], 0.0) is not None
        }
        assert len(kept_by_first) == 2
        second.stop()
        items = [{"id": body["id"], "label": "0"} for body in later]
        answer = http.post("/v2/models/digits/feedback", json={"items": items})
    assert answer.status_code == 200
    results = {r["id"]: r for r in answer.json()["results"]}
    for body in later:
        result = results[body["id"]]
        if body["id"] in kept_by_first:
            assert result["result"] == "ok"
        else:
            assert result["result"] == "unavailable"
            assert "did not answer" in result["message"]
    final = counted()
    assert final[GATEWAY_ITEMS, "ok"] - after[GATEWAY_ITEMS, "ok"] == 2
    assert final[GATEWAY_ITEMS, "unavailable"] - after[GATEWAY_ITEMS, "unavailable"] == 2


def test_a_row_that_predicted_nothing_has_null_label_and_confidence(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    write_softmax(repository / "softmax" / "1")
    server = serve(repository)
    gateway = start_gateway([server.address])
    rows = np.array([[np.nan, 0.0], [5.0, 0.0]], dtype=np.float32)  # softmax: [NaN, NaN], "a"
    prediction = server.stub.ModelInfer(raw_request("softmax", {"x": rows})).id
    items = [{"id": prediction, "label": "a", "row": row} for row in (0, 1)]
    with client(gateway) as http:
        answer = http.post("/v2/models/softmax/feedback", json={"items": items})
    assert answer.status_code == 200, answer.text
    nothing, predicted = answer.json()["results"]
    assert (nothing["result"], nothing["correct"]) == ("ok", False)
    assert "predicted_label" not in nothing  # null, so left out
    assert "confidence" not in nothing
    assert (predicted["predicted_label"], predicted["correct"]) == ("a", True)
