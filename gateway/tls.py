"""TLS to the model servers: the gateway's side of the gRPC hop (`GATEWAY_BACKEND_TLS_*`)."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

ChannelOptions = Sequence[tuple[str, str | int]]

_MIN_CONNECT_TIMEOUT = "grpc.min_reconnect_backoff_ms"
"""grpc's name for the least time a connection attempt gets (not a backoff, despite the name)."""
_TLS_CONNECT_TIMEOUT_MS = 2000
"""That least time for TLS channels: the attempt includes the handshake. With the 100 ms the
plaintext channels get, 3 to 10 of 20 first calls on fresh TLS channels failed UNAVAILABLE on
a CPU-starved host (a call took up to 1 s there, 3 ms unloaded); with 2000 ms none did."""


@dataclass(frozen=True)
class BackendTls:
    """How the gateway reaches its model servers over TLS, from PEM files the settings have
    checked."""

    ca_file: Path
    """The model servers' certificates must be signed by this CA."""
    cert_file: Path | None
    """With `key_file`: the certificate the gateway presents (mutual TLS)."""
    key_file: Path | None
    server_name: str | None
    """The name the model servers' certificates are checked against instead of the host in
    their address."""

    def secure_channel(self, address: str, options: ChannelOptions) -> grpc.aio.Channel:
        """A TLS channel to one model server (it connects on first use)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=None if self.key_file is None else self.key_file.read_bytes(),
            certificate_chain=None if self.cert_file is None else self.cert_file.read_bytes(),
        )
        options = [(key, value) for key, value in options if key != _MIN_CONNECT_TIMEOUT]
        options.append((_MIN_CONNECT_TIMEOUT, _TLS_CONNECT_TIMEOUT_MS))
        if self.server_name is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(address, credentials, options=options)

    def __str__(self) -> str:
        described = f"TLS, trusting {self.ca_file}"
        if self.cert_file is not None:
            described += f", client certificate {self.cert_file}"
        if self.server_name is not None:
            described += f", server name {self.server_name}"
        return described
