"""Span encoding for OTLP: the SDK's encoder against `otel.span_encoding.SpanEncoder`.

    .venv/bin/python benchmarks/bench_span_encoding.py [--requests 250]

Records what the model server records per request at full sampling (a server span with the rpc
attributes and its decode, queue and encode children, one forward span per 8 requests with a
link to each), then times both encoders on the same finished spans: the µs per span each costs
on the export thread.
"""

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AttributeValue

from otel.span_encoding import SpanEncoder
from otel.tracing import LeanTracerProvider

RPC = {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService"}


def _record(requests: int) -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider()  # the model server's spans
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("model_server", "0.1.0")
    batch: list[trace.Link] = []
    for _ in range(requests):
        server = tracer.start_span(
            "inference.GRPCInferenceService/ModelInfer",
            kind=trace.SpanKind.SERVER,
            attributes={**RPC, "rpc.method": "ModelInfer"},
        )
        context = trace.set_span_in_context(server)
        for phase in ("infer.decode", "infer.queue", "infer.encode"):
            tracer.start_span(phase, context).end()
        batch.append(trace.Link(server.get_span_context()))
        if len(batch) == 8:
            attributes: dict[str, AttributeValue] = {
                "model.name": "digits",
                "model.version": "1",
                "inferwatch.batch.size": 8,
            }
            tracer.start_span("infer.forward", context, links=batch, attributes=attributes).end()
            batch = []
        server.set_attribute("rpc.grpc.status_code", 0)
        server.end()
    return exporter.get_finished_spans()


def _per_span_us(encode: Callable[[], object], spans: int) -> float:
    best = float("inf")
    for _ in range(30):
        began = time.perf_counter()
        encode()
        best = min(best, time.perf_counter() - began)
    return best / spans * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=250)
    args = parser.parse_args(argv)
    spans = _record(args.requests)
    encoder = SpanEncoder()
    sdk = _per_span_us(lambda: encode_spans(spans).SerializeToString(), len(spans))
    lean = _per_span_us(lambda: encoder.encode(spans), len(spans))
    print(f"{len(spans)} spans: SDK encoder {sdk:.1f} µs/span, SpanEncoder {lean:.1f} µs/span")
    return 0


if __name__ == "__main__":
    sys.exit(main())
