"""The gateway's one error hierarchy; `gateway.app` maps it to HTTP responses once.

Every failure a client can cause or observe is one of these, with the HTTP status it gets.
`str(error)` is safe to send to the client: it names the offending field or the reason, never
an internal address or a stack trace.
"""

from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import ClassVar


class GatewayError(Exception):
    """Base class; `status` is the HTTP status, `headers` go with the answer."""

    status: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR
    headers: ClassVar[Mapping[str, str]] = MappingProxyType({})


class InvalidRequestError(GatewayError):
    """The request is malformed or does not match the model (names the field)."""

    status = HTTPStatus.BAD_REQUEST


class ClientClosedRequestError(GatewayError):
    """The client closed the connection before its request was read; nobody gets the answer,
    the status is for the access log, metrics and span (nginx's 499)."""

    status = 499


class UnauthorizedError(GatewayError):
    """API keys are configured and the request carries no valid one."""

    status = HTTPStatus.UNAUTHORIZED
    headers = MappingProxyType({"WWW-Authenticate": "Bearer"})


class NotFoundError(GatewayError):
    """No such model or version on the model servers."""

    status = HTTPStatus.NOT_FOUND


class PayloadTooLargeError(GatewayError):
    """The request body is above the configured limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaTypeError(GatewayError):
    """The body's Content-Type is neither JSON nor the binary tensor extension's."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class RequestHeadersTooLargeError(GatewayError):
    """The request's headers are larger than the configured limit."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class TooManyRequestsError(GatewayError):
    """The gateway (as many inferences in flight as it takes) or the model server (its queue is
    full, or its own limit is reached) refused the request for now; retry later."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    headers = MappingProxyType({"Retry-After": "1"})


class UpstreamFailedError(GatewayError):
    """The model server failed while handling the request."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR


class UnrepresentableOutputError(GatewayError):
    """A model output holds values JSON cannot carry (NaN, infinity); binary output can."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR


class BadGatewayError(GatewayError):
    """The model server answered in a way the gateway cannot translate."""

    status = HTTPStatus.BAD_GATEWAY


class UnavailableError(GatewayError):
    """No model server could take the request: unreachable, or the model is not ready."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class DeadlineExceededError(GatewayError):
    """The client's timeout passed before the model server answered."""

    status = HTTPStatus.GATEWAY_TIMEOUT
