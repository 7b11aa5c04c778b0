"""Registers a servicer's unary methods, decoding requests so that bad bytes are the client's error.

The generated `add_*Servicer_to_server` functions decode with `FromString`, and grpc answers a
request that does not parse with UNKNOWN and logs a stack trace at ERROR. Here a request whose
bytes do not parse reaches the handler as an `UndecodableRequest`, which the `rpc` decorator
answers with INVALID_ARGUMENT like any other malformed request.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """What a handler receives in place of a request message whose bytes did not parse."""

    type_name: str
    """Full name of the expected message type."""
    reason: str
    """The protobuf runtime's description of the failure."""


def _decoder(message_class: type[message.Message]) -> Callable[[bytes], Any]:
    type_name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> message.Message | UndecodableRequest:
        try:
            return message_class.FromString(data)
        except message.DecodeError as exc:
            return UndecodableRequest(type_name, str(exc))

    return decode


def add_servicer(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Serve every method of `service` (all unary) from the same-named method of `servicer`."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name}: only unary methods are supported")
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_decoder(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
