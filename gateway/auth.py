"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time.

Keys come from `GATEWAY_API_KEYS` and/or the file `GATEWAY_API_KEYS_FILE` (one per line). Only
their SHA-256 digests are kept, so every comparison runs over equal-length values, and every
configured key is compared, so the time taken does not tell which key almost matched.
"""

import hashlib
import hmac
import logging
from collections.abc import Iterable

from fastapi.security import HTTPAuthorizationCredentials

from gateway.errors import UnauthorizedError
from gateway.settings import GatewaySettings, read_keys_file

logger = logging.getLogger(__name__)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The configured keys; `enabled` is False when there are none."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> "ApiKeys":
        """Keys from the settings and the keys file."""
        keys = [key.get_secret_value() for key in settings.api_keys]
        if settings.api_keys_file is not None:
            keys += read_keys_file(settings.api_keys_file)
        return cls(keys)

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return bool(self._digests)

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        """UnauthorizedError unless the credentials carry a configured key."""
        if credentials is None:
            raise UnauthorizedError("missing API key: send Authorization: Bearer <key>")
        presented = _digest(credentials.credentials)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            logger.info("rejected a request with an unknown API key")
            raise UnauthorizedError("invalid API key")
