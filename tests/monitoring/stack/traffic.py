"""Steady traffic with injected faults, one thread per stream, until stopped.

Faults are real: latency and server errors through the model server's fault injection request
parameters (the server runs with MODEL_SERVER_FAULT_INJECTION=true), drift by sending inverted
digits, rejections by bursting at a model whose queue holds one request, low accuracy by sending
the true labels of a model whose class names are wrong. Labelled streams send each answer's
true labels right after it (Feedback RPC, or the gateway's feedback route).
"""

import contextlib
import threading
from collections.abc import Callable

import grpc
import httpx
import numpy as np

from model_server import digits, faults
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc
from tests.model_server.protocol import raw_request

Send = Callable[[int], None]
"""Sends the i-th request of a stream."""


class Traffic:
    """Streams of requests, each at its own pace, on daemon threads."""

    def __init__(self, grpc_address: str, gateway_url: str) -> None:
        self._channel = grpc.insecure_channel(grpc_address)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._monitoring = mon_grpc.ModelMonitoringStub(self._channel)
        self._http = httpx.Client(base_url=gateway_url, timeout=10)
        split = digits.load_split()
        self._pixels = split.x_test.astype(np.float32)
        self._truth = [str(label) for label in split.y_test]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def grpc(
        self, model: str, *, invert: bool = False, parameters: dict[str, int | bool] | None = None
    ) -> Send:
        """ModelInfer of `rows` digits (optionally inverted) with fault parameters."""

        rows = 8

        def send(i: int) -> None:
            start = (i * rows) % (len(self._pixels) - rows)
            pixels = self._pixels[start : start + rows]
            request = raw_request(model, {"pixels": 16.0 - pixels if invert else pixels})
            for name, value in (parameters or {}).items():
                if isinstance(value, bool):
                    request.parameters[name].bool_param = value
                else:
                    request.parameters[name].int64_param = value
            with contextlib.suppress(grpc.RpcError):  # faults fail on purpose; Prometheus counts
                self._stub.ModelInfer(request, timeout=10)

        return send

    def labelled(self, model: str) -> Send:
        """ModelInfer of `rows` digits, then their true labels through the Feedback RPC."""

        rows = 8

        def send(i: int) -> None:
            start = (i * rows) % (len(self._pixels) - rows)
            request = raw_request(model, {"pixels": self._pixels[start : start + rows]})
            answer = self._stub.ModelInfer(request, timeout=10)
            items = [
                mon_pb.FeedbackItem(id=answer.id, label=self._truth[start + row], row=row)
                for row in range(rows)
            ]
            results = self._monitoring.Feedback(
                mon_pb.FeedbackRequest(name=model, items=items), timeout=10
            ).results
            assert all(r.result == mon_pb.FEEDBACK_RESULT_OK for r in results), results

        return send

    def burst(self, model: str, size: int) -> Send:
        """`size` concurrent one-row calls: more than a small queue holds."""

        def send(i: int) -> None:
            request = raw_request(model, {"pixels": self._pixels[i % 100 : i % 100 + 1]})
            calls = [self._stub.ModelInfer.future(request, timeout=10) for _ in range(size)]
            for call in calls:
                with contextlib.suppress(grpc.RpcError):  # the rejections are the point
                    call.result()

        return send

    def rest(self, model: str, *, labelled: bool = False) -> Send:
        """One-row REST inference through the gateway; `labelled`: then its true label through
        the gateway's feedback route."""

        def send(i: int) -> None:
            index = i % len(self._pixels)
            body = {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 64],
                        "datatype": "FP32",
                        "data": self._pixels[index].tolist(),
                    }
                ]
            }
            answer = self._http.post(f"/v2/models/{model}/infer", json=body)
            if labelled:
                items = [{"id": answer.json()["id"], "label": self._truth[index]}]
                results = self._http.post(
                    f"/v2/models/{model}/feedback", json={"items": items}
                ).json()["results"]
                assert [r["result"] for r in results] == ["ok"], results

        return send

    def start(self, send: Send, every_s: float) -> None:
        """Calls `send(i)` every `every_s` seconds (or back to back when slower) until stop."""

        def loop() -> None:
            i = 0
            while not self._stop.wait(every_s):
                send(i)
                i += 1

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stops every stream and closes the clients."""
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        self._http.close()
        self._channel.close()


DELAY = faults.DELAY_MS
ERROR = faults.ERROR
