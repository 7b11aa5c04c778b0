"""Request bodies: the same bytes for the same options, malformed ones short, faults drawn."""

import numpy as np

from loadgen import payloads
from loadgen.payloads import Kind, Mix
from model_server import digits
from model_server.proto import grpc_service_pb2 as pb

SPLIT = digits.load_split()


def _build(protocol: str, mix: Mix) -> payloads.Payloads:
    return payloads.build(protocol, "digits", SPLIT.x_test, SPLIT.y_test, mix)


def test_same_options_same_bytes() -> None:
    assert _build("grpc", Mix()).digest() == _build("grpc", Mix()).digest()
    assert _build("grpc", Mix()).digest() != _build("rest", Mix()).digest()


def test_grpc_bodies() -> None:
    built = _build("grpc", Mix(malformed=0.1, fault_delay=0.1, fault_delay_ms=7))
    clean = pb.ModelInferRequest.FromString(built.bodies[Kind.CLEAN][3])
    malformed = pb.ModelInferRequest.FromString(built.bodies[Kind.MALFORMED][3])
    delayed = pb.ModelInferRequest.FromString(built.bodies[Kind.FAULT_DELAY][3])

    assert clean.model_name == "digits"
    assert np.array_equal(np.frombuffer(clean.raw_input_contents[0], "<f4"), SPLIT.x_test[3])
    assert len(malformed.raw_input_contents[0]) == 252
    assert delayed.parameters["inferwatch_fault_delay_ms"].int64_param == 7
    assert not clean.parameters


def test_kinds_are_drawn_by_share() -> None:
    built = _build("rest", Mix(malformed=0.25, fault_error=0.25))
    draws = np.random.default_rng(0).random(4000)

    kinds = [built.pick(index, float(draw))[0] for index, draw in enumerate(draws)]

    assert 900 < kinds.count(Kind.MALFORMED) < 1100
    assert 900 < kinds.count(Kind.FAULT_ERROR) < 1100
    assert 1800 < kinds.count(Kind.CLEAN) < 2200
    assert built.pick(5, 0.99)[2] == SPLIT.y_test[5]
