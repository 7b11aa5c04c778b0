"""Delayed true labels over real gRPC: response ids, the Feedback RPC, the quality metrics."""

import gc
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, f1_score, recall_score

from model_server import digits
from model_server.feedback import FeedbackHub
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc
from model_server.settings import ModelServerSettings
from tests.conftest import Serve, ServerThread, wait_until
from tests.model_server.protocol import outputs, pixels_request, raw_request
from tests.model_server.test_models import probe_config, write_probe, write_softmax
from tests.telemetry_capture import TelemetryCapture

DIGITS = {"model.name": "digits", "model.version": "1"}
INFER_SPAN = "inference.GRPCInferenceService/ModelInfer"
FEEDBACK_SPAN = "inferwatch.monitoring.v1.ModelMonitoring/Feedback"
OK = mon_pb.FEEDBACK_RESULT_OK


def _infer(
    server: ServerThread, pixels: np.ndarray, *, request_id: str = "", version: str = ""
) -> pb.ModelInferResponse:
    response: pb.ModelInferResponse = server.stub.ModelInfer(
        pixels_request(pixels, request_id=request_id, version=version)
    )
    return response


def _feedback(
    server: ServerThread,
    items: list[tuple[str, str, int]],
    *,
    name: str = "digits",
    version: str = "",
) -> list[mon_pb.FeedbackItemResult]:
    """(id, label, row) items for one Feedback call; its results."""
    assert server.channel is not None
    request = mon_pb.FeedbackRequest(
        name=name,
        version=version,
        items=[mon_pb.FeedbackItem(id=i, label=label, row=row) for i, label, row in items],
    )
    answer = mon_grpc.ModelMonitoringStub(server.channel).Feedback(request)
    return list(answer.results)


def test_every_response_carries_an_id_and_its_trace_id(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    first, second = (_infer(server, np.zeros((1, 64))) for _ in range(2))
    for response in (first, second):
        assert len(response.id) == 32
        int(response.id, 16)  # hex
    assert first.id != second.id
    assert _infer(server, np.zeros((1, 64)), request_id="caller-7").id == "caller-7"

    trace_ids = {
        f"{s.context.trace_id:032x}" for s in telemetry.finished_spans() if s.name == INFER_SPAN
    }
    for response in (first, second):
        assert response.parameters["inferwatch_trace_id"].string_param in trace_ids


def test_live_accuracy_f1_and_recall_equal_scikit_learn(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    split = digits.load_split()
    pixels, truth = split.x_test[:150], split.y_test[:150].copy()
    truth[::3] = (truth[::3] + 1) % 10  # a third of the labels disagree: accuracy near 0.65
    # Concurrent requests share batches: each must keep its own rows. Two waves of 75, below
    # the server's 128 concurrent calls (MAX_CONCURRENT_RPCS), beyond which it refuses.
    answers = []
    for wave in (range(75), range(75, 150)):
        calls = [server.stub.ModelInfer.future(pixels_request(pixels[i : i + 1])) for i in wave]
        answers += [call.result(timeout=30) for call in calls]
    predicted = np.array([int(outputs(answer)["label"][0]) for answer in answers])
    ok_before = telemetry.total(
        "inferwatch.feedback.items", result="ok", **{"model.name": "digits"}
    )
    delays_before = telemetry.total("inferwatch.feedback.label.delay", **DIGITS)  # cumulative

    items = [(answers[i].id, str(truth[i]), 0) for i in range(150)]
    *results, unknown = _feedback(server, [*items, ("never-made", "1", 0)])  # several chunks
    assert unknown.message.startswith("items[150].id: no prediction 'never-made'")

    assert [r.result for r in results] == [OK] * 150
    assert [r.correct for r in results] == list(predicted == truth)
    assert [r.predicted_label for r in results] == [str(p) for p in predicted]
    assert all(r.model_version == "1" and 0 < r.confidence <= 1 for r in results)
    assert telemetry.total("inferwatch.feedback.accuracy", **DIGITS) == pytest.approx(
        accuracy_score(truth, predicted), abs=1e-12
    )
    assert telemetry.total("inferwatch.feedback.macro_f1", **DIGITS) == pytest.approx(
        f1_score(truth, predicted, average="macro"), abs=1e-12
    )
    classes = sorted(set(truth.tolist()))
    expected_recall = recall_score(truth, predicted, average=None, labels=classes)
    recall = {
        (p.attributes or {})["class"]: p.value  # type: ignore[union-attr]
        for p in telemetry.points("inferwatch.feedback.recall")
        if (p.attributes or {}).get("model.name") == "digits"
    }
    assert recall == pytest.approx(
        {str(c): r for c, r in zip(classes, expected_recall, strict=True)}, abs=1e-12
    )
    assert telemetry.total("inferwatch.feedback.window.labels", **DIGITS) == 150
    assert telemetry.total("inferwatch.feedback.labelled", **DIGITS) == 1.0
    assert telemetry.total("inferwatch.feedback.label.delay", **DIGITS) - delays_before == 150
    ok_after = telemetry.total("inferwatch.feedback.items", result="ok", **{"model.name": "digits"})
    assert ok_after - ok_before == 150


@pytest.fixture
def two_models(repository: Path) -> Path:
    """digits versions 1 and 2, and `twin` (another classifier); `probe` has no labels."""
    shutil.copytree(repository / "digits" / "1", repository / "digits" / "2")
    shutil.copytree(repository / "digits" / "1", repository / "twin" / "1")
    config = repository / "twin" / "1" / "config.json"
    config.write_text(config.read_text().replace('"name": "digits"', '"name": "twin"'))
    write_probe(repository / "probe" / "1", probe_config())
    return repository


def test_item_errors_are_answered_one_by_one(two_models: Path, serve: Serve) -> None:
    server = serve(two_models)
    one = _infer(server, np.zeros((1, 64)), request_id="one", version="1")
    _infer(server, np.zeros((3, 64)), request_id="three", version="2")
    twin = raw_request("twin", {"pixels": np.zeros((1, 64), np.float32)}, request_id="twin-id")
    server.stub.ModelInfer(twin)
    label = str(int(outputs(one)["label"][0]))

    results = _feedback(
        server,
        [
            ("one", label, 0),  # 0 ok
            ("one", "3", 0),  # 1 duplicate: the first label stands
            ("nope", "3", 0),  # 2 unknown
            ("twin-id", "3", 0),  # 3 another model's prediction
            ("three", "3", 3),  # 4 no row 3
            ("three", "ten", 0),  # 5 not a label
            ("three", "4", 2),  # 6 ok
            ("", "4", 0),  # 7 empty id
        ],
    )
    by_result = mon_pb.FeedbackResult.Name
    assert [by_result(r.result) for r in results] == [
        "FEEDBACK_RESULT_OK",
        "FEEDBACK_RESULT_DUPLICATE",
        "FEEDBACK_RESULT_UNKNOWN_ID",
        "FEEDBACK_RESULT_OTHER_MODEL",
        "FEEDBACK_RESULT_INVALID_ROW",
        "FEEDBACK_RESULT_INVALID_LABEL",
        "FEEDBACK_RESULT_OK",
        "FEEDBACK_RESULT_UNKNOWN_ID",
    ]
    assert results[0].correct
    assert results[0].message == ""
    assert results[6].model_version == "2"
    fields = {1: "items[1]", 2: "items[2].id", 3: "items[3].id", 4: "items[4].row",
              5: "items[5].label", 7: "items[7].id"}  # fmt: skip
    for index, field in fields.items():
        assert results[index].message.startswith(f"{field}:"), results[index].message
    assert "twin:1" in results[3].message
    assert "3 rows" in results[4].message
    assert "'ten'" in results[5].message

    # Naming a version accepts only that version's predictions.
    pinned = _feedback(server, [("three", "1", 0), ("three", "1", 0)], version="2")
    assert [by_result(r.result) for r in pinned] == [
        "FEEDBACK_RESULT_OK",
        "FEEDBACK_RESULT_DUPLICATE",
    ]
    other = _feedback(server, [("three", "1", 1)], version="1")
    assert by_result(other[0].result) == "FEEDBACK_RESULT_OTHER_MODEL"
    assert "digits:2, not digits:1" in other[0].message


@pytest.mark.parametrize(
    ("name", "version", "items", "code", "message"),
    [
        ("nope", "", 1, grpc.StatusCode.NOT_FOUND, "'nope'"),
        ("digits", "7", 1, grpc.StatusCode.NOT_FOUND, "no version '7'"),
        ("probe", "", 1, grpc.StatusCode.NOT_FOUND, "keeps no predictions"),
        ("digits", "", 0, grpc.StatusCode.INVALID_ARGUMENT, "items: 0 given"),
        ("digits", "", 10_001, grpc.StatusCode.INVALID_ARGUMENT, "items: 10001 given"),
    ],
)
def test_whole_call_errors(
    two_models: Path,
    serve: Serve,
    name: str,
    version: str,
    items: int,
    code: grpc.StatusCode,
    message: str,
) -> None:
    server = serve(two_models)
    with pytest.raises(grpc.RpcError) as error:
        _feedback(server, [("x", "1", 0)] * items, name=name, version=version)
    assert error.value.code() == code
    assert message in (error.value.details() or "")


def test_the_store_is_bounded_and_counts_what_falls_out(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository, feedback_max_predictions=4)
    for index in range(6):
        _infer(server, np.zeros((1, 64)), request_id=f"r{index}")
    results = _feedback(server, [("r0", "0", 0), ("r5", "0", 0)])
    assert mon_pb.FeedbackResult.Name(results[0].result) == "FEEDBACK_RESULT_EVICTED"
    assert "max 4 predictions" in results[0].message
    assert results[1].result == OK
    assert telemetry.total("inferwatch.feedback.store.dropped", reason="evicted", **DIGITS) == 2
    assert telemetry.total("inferwatch.feedback.store.predictions") == 4


def test_old_predictions_expire_and_are_counted(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository, feedback_max_age_s=0.3, feedback_interval_s=0.05)
    _infer(server, np.zeros((1, 64)), request_id="late")
    _infer(server, np.zeros((2, 64)), request_id="later")
    wait_until(  # the periodic sweep, no feedback call needed
        lambda: (
            telemetry.total("inferwatch.feedback.store.dropped", reason="expired", **DIGITS) == 3
        )
    )
    assert telemetry.total("inferwatch.feedback.store.predictions") == 0
    [late] = _feedback(server, [("late", "0", 0)])
    assert mon_pb.FeedbackResult.Name(late.result) == "FEEDBACK_RESULT_EXPIRED"
    assert "max age 0.3 s" in late.message


def test_the_feedback_span_links_to_the_prediction(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    answer = _infer(server, digits.load_split().x_test[:1])
    [infer_span] = [s for s in telemetry.finished_spans() if s.name == INFER_SPAN]
    truth = str(int(outputs(answer)["label"][0]))
    [result] = _feedback(server, [(answer.id, truth, 0)])
    assert result.trace_id == f"{infer_span.context.trace_id:032x}"
    assert result.trace_id == answer.parameters["inferwatch_trace_id"].string_param

    def feedback_spans() -> list[object]:
        return [s for s in telemetry.finished_spans() if s.name == FEEDBACK_SPAN]

    wait_until(lambda: bool(feedback_spans()))
    [span] = [s for s in telemetry.finished_spans() if s.name == FEEDBACK_SPAN]
    [link] = span.links
    assert (link.context.trace_id, link.context.span_id) == (
        infer_span.context.trace_id,
        infer_span.context.span_id,
    )
    assert link.attributes == {"inferwatch.feedback.correct": True}


def test_a_row_with_nan_probabilities_predicted_nothing_and_counts_as_wrong(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    write_softmax(repository / "softmax" / "1")
    server = serve(repository)
    rows = np.array([[np.nan, 0.0], [5.0, 0.0]], dtype=np.float32)  # softmax: [NaN, NaN], "a"
    two = server.stub.ModelInfer(raw_request("softmax", {"x": rows}))
    one = server.stub.ModelInfer(
        raw_request("softmax", {"x": np.array([[np.inf, 0.0]], dtype=np.float32)})
    )

    results = _feedback(
        server, [(two.id, "a", 0), (two.id, "a", 1), (one.id, "a", 0)], name="softmax"
    )
    assert [r.result for r in results] == [OK] * 3
    assert [(r.predicted_label, r.correct) for r in results] == [
        ("", False),
        ("a", True),
        ("", False),
    ]
    assert [r.confidence for r in results] == [0.0, pytest.approx(1.0, abs=1e-2), 0.0]
    softmax = {"model.name": "softmax", "model.version": "1"}
    assert telemetry.total("inferwatch.feedback.accuracy", **softmax) == pytest.approx(1 / 3)


def test_feedback_off_still_answers_with_ids(repository: Path, serve: Serve) -> None:
    server = serve(repository, feedback_max_predictions=0)
    answer = _infer(server, np.zeros((1, 64)))
    assert len(answer.id) == 32
    with pytest.raises(grpc.RpcError) as error:
        _feedback(server, [(answer.id, "0", 0)])
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "feedback is off" in (error.value.details() or "")


def test_labelled_share_counts_the_predictions_still_waiting(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    answers = [_infer(server, np.zeros((2, 64))) for _ in range(5)]  # 10 predictions
    _feedback(server, [(answers[0].id, "0", 0), (answers[1].id, "0", 1), (answers[2].id, "0", 0)])
    assert telemetry.total("inferwatch.feedback.labelled", **DIGITS) == pytest.approx(0.3)
    assert telemetry.total("inferwatch.feedback.window.labels", **DIGITS) == 3


def test_the_feedback_span_links_wrong_predictions_first_and_at_most_128(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    answers = [_infer(server, np.zeros((1, 64))) for _ in range(130)]
    label = str(int(outputs(answers[0])["label"][0]))  # the same input: the same prediction
    wrong = str((int(label) + 1) % 10)
    items = [(answer.id, label, 0) for answer in answers[:-1]] + [(answers[-1].id, wrong, 0)]
    assert [r.correct for r in _feedback(server, items)] == [True] * 129 + [False]

    wait_until(lambda: any(s.name == FEEDBACK_SPAN for s in telemetry.finished_spans()))
    [span] = [s for s in telemetry.finished_spans() if s.name == FEEDBACK_SPAN]
    assert len(span.links) == 128
    first = span.links[0]
    assert first.attributes == {"inferwatch.feedback.correct": False}
    assert f"{first.context.trace_id:032x}" == (
        answers[-1].parameters["inferwatch_trace_id"].string_param
    )
    assert all(link.attributes == {"inferwatch.feedback.correct": True} for link in span.links[1:])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("feedback_max_predictions", -1),
        ("feedback_max_age_s", 0),
        ("feedback_window_s", -5),
        ("feedback_interval_s", 0),
    ],
)
def test_feedback_settings_are_checked_and_documented(field: str, value: float) -> None:
    assert ModelServerSettings.model_fields[field].description
    with pytest.raises(ValidationError, match=field):
        ModelServerSettings.model_validate({field: value})


def test_a_version_with_an_empty_window_reports_no_quality(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)

    def labels_points() -> list[object]:
        return [
            p
            for p in telemetry.points("inferwatch.feedback.window.labels")
            if (p.attributes or {}).get("model.name") == "digits"
        ]

    _feedback(server, [("nope", "1", 0)])  # a Feedback call evaluates the windows
    assert labels_points() == []
    _infer(server, np.zeros((1, 64)))
    _feedback(server, [("nope", "1", 0)])
    assert len(labels_points()) == 1
    assert telemetry.total("inferwatch.feedback.window.labels", **DIGITS) == 0
    assert telemetry.total("inferwatch.feedback.labelled", **DIGITS) == 0.0
    assert telemetry.points("inferwatch.feedback.accuracy") == []  # no labels: no accuracy


def test_kept_predictions_leave_nothing_for_the_garbage_collector_to_walk() -> None:
    """A full store must not lengthen every full collection (the soak run's p99): each kept
    prediction, with its request's span, becomes untracked once collected."""
    hub = FeedbackHub(max_predictions=10_000, max_age_s=3600, window_s=3600)
    recorder = hub.recorder("digits", 1, digits.config())
    assert recorder is not None
    tracer = TracerProvider().get_tracer(__name__)
    probabilities = np.full((1, 10), 0.1, dtype=np.float32)
    gc.collect()
    before = len(gc.get_objects())
    for index in range(5_000):
        with tracer.start_as_current_span("infer"):
            recorder.record(f"id-{index}", [probabilities])
    gc.collect()
    assert hub.stored == 5_000
    assert len(gc.get_objects()) - before < 500
