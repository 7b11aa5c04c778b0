"""Server-side fault injection for load tests: added latency, or a server error, on request.

Off unless the server was started with `MODEL_SERVER_FAULT_INJECTION=true` (`--fault-injection`).
A request asks for a fault with Open Inference Protocol request parameters:

- `inferwatch_fault_delay_ms` (integer, 0 to 60000): wait that long before the model runs;
- `inferwatch_fault_error` (boolean): fail as a server fault, INTERNAL (HTTP 500 through the
  gateway), counted, traced and alerted on like any other server error.

A server started without the setting refuses such a request with INVALID_ARGUMENT naming the
parameter and the setting: a client can never switch faults on by itself.
"""

import asyncio
from collections.abc import Mapping

from model_server.errors import InferenceError, InvalidInputError, echo
from model_server.types import ParameterValue

DELAY_MS = "inferwatch_fault_delay_ms"
ERROR = "inferwatch_fault_error"
MAX_DELAY_MS = 60_000
SETTING = "MODEL_SERVER_FAULT_INJECTION"


class InjectedFaultError(InferenceError):
    """The failure a request asked for with `inferwatch_fault_error`: a server error on purpose."""


async def inject(parameters: Mapping[str, ParameterValue], enabled: bool) -> None:
    """Wait and/or raise as the request's fault parameters ask; refuse them when not enabled."""
    delay_ms = parameters.get(DELAY_MS)
    error = parameters.get(ERROR)
    if delay_ms is None and error is None:
        return
    if not enabled:
        name = DELAY_MS if delay_ms is not None else ERROR
        raise InvalidInputError(
            f"parameters.{name}: fault injection is off on this server "
            f"(start it with {SETTING}=true or --fault-injection)"
        )
    if delay_ms is not None:
        if type(delay_ms) is not int or not 0 <= delay_ms <= MAX_DELAY_MS:
            raise InvalidInputError(
                f"parameters.{DELAY_MS}: must be an integer from 0 to {MAX_DELAY_MS} "
                f"(milliseconds), got {echo(delay_ms)}"
            )
        await asyncio.sleep(delay_ms / 1000)
    if error is not None:
        if type(error) is not bool:
            raise InvalidInputError(f"parameters.{ERROR}: must be true or false, got {echo(error)}")
        if error:
            raise InjectedFaultError(f"injected fault (parameters.{ERROR} is true)")
