"""The request bodies of a run: every test row encoded once per kind, before the clock starts.

Kinds: `clean`; `malformed` (the input is 4 bytes short over gRPC, one value short over REST:
the server must refuse it); `fault_delay` and `fault_error` (carry the model server's
fault-injection request parameters). Each request's kind is drawn from the `Mix`.
"""

import enum
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from model_server.faults import DELAY_MS, ERROR
from model_server.proto import grpc_service_pb2 as pb

INPUT = "pixels"
LABEL_OUTPUT = "label"


class Kind(enum.StrEnum):
    """What a request is meant to provoke."""

    CLEAN = "clean"
    MALFORMED = "malformed"
    FAULT_DELAY = "fault_delay"
    FAULT_ERROR = "fault_error"


@dataclass(frozen=True)
class Mix:
    """Shares of the requests that are malformed or carry a fault; the rest are clean."""

    malformed: float = 0.0
    fault_error: float = 0.0
    fault_delay: float = 0.0
    fault_delay_ms: int = 0

    def shares(self) -> list[tuple[Kind, float]]:
        """(kind, share) for every kind with a share above zero, clean last."""
        faulty = [
            (Kind.MALFORMED, self.malformed),
            (Kind.FAULT_ERROR, self.fault_error),
            (Kind.FAULT_DELAY, self.fault_delay),
        ]
        shares = [(kind, share) for kind, share in faulty if share > 0]
        return [*shares, (Kind.CLEAN, 1.0 - sum(share for _, share in shares))]


@dataclass(frozen=True)
class Payloads:
    """Bodies by kind (one per row) and the label each row should get."""

    bodies: dict[Kind, list[bytes]]
    labels: np.ndarray
    thresholds: list[tuple[float, Kind]]
    """Cumulative shares: a draw below the first threshold gets its kind, and so on."""

    def pick(self, index: int, draw: float) -> tuple[Kind, bytes, int]:
        """(kind, body, expected label) of request `index`; `draw` is uniform in [0, 1)."""
        kind = Kind.CLEAN
        for threshold, candidate in self.thresholds:
            if draw < threshold:
                kind = candidate
                break
        row = index % len(self.labels)
        return kind, self.bodies[kind][row], int(self.labels[row])

    def digest(self) -> str:
        """SHA-256 over every body, so two runs can show they sent the same bytes."""
        digest = hashlib.sha256()
        for kind in sorted(self.bodies):
            for body in self.bodies[kind]:
                digest.update(body)
        return digest.hexdigest()


def build(protocol: str, model: str, pixels: np.ndarray, labels: np.ndarray, mix: Mix) -> Payloads:
    """Encode every row ([N, 64] FP32) for `protocol` ("grpc" or "rest")."""
    encode = _grpc_body if protocol == "grpc" else _rest_body
    shares = mix.shares()
    bodies = {
        kind: [encode(model, row, kind, mix.fault_delay_ms) for row in pixels] for kind, _ in shares
    }
    thresholds, total = [], 0.0
    for kind, share in shares[:-1]:
        total += share
        thresholds.append((total, kind))
    return Payloads(bodies=bodies, labels=labels, thresholds=thresholds)


def _fault_parameters(kind: Kind, delay_ms: int) -> dict[str, bool | int]:
    if kind is Kind.FAULT_ERROR:
        return {ERROR: True}
    if kind is Kind.FAULT_DELAY:
        return {DELAY_MS: delay_ms}
    return {}


def _grpc_body(model: str, row: np.ndarray, kind: Kind, delay_ms: int) -> bytes:
    raw = row.astype("<f4").tobytes()
    if kind is Kind.MALFORMED:
        raw = raw[:-4]
    request = pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=INPUT, datatype="FP32", shape=[1, 64])],
        raw_input_contents=[raw],
    )
    for name, value in _fault_parameters(kind, delay_ms).items():
        if isinstance(value, bool):
            request.parameters[name].bool_param = value
        else:
            request.parameters[name].int64_param = value
    return request.SerializeToString(deterministic=True)


def _rest_body(model: str, row: np.ndarray, kind: Kind, delay_ms: int) -> bytes:
    data = row.astype(np.float32).tolist()
    if kind is Kind.MALFORMED:
        data = data[:-1]
    document: dict[str, object] = {
        "inputs": [{"name": INPUT, "shape": [1, 64], "datatype": "FP32", "data": data}],
        "outputs": [{"name": LABEL_OUTPUT}],
    }
    parameters = _fault_parameters(kind, delay_ms)
    if parameters:
        document["parameters"] = parameters
    return json.dumps(document, separators=(",", ":")).encode()
