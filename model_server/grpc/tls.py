"""TLS on the gRPC hop: PEM files checked when the settings are read, server credentials.

The files are checked with the standard library's `ssl` (OpenSSL) while the settings are
validated, so a missing, unreadable or garbage file, or a key that is not the certificate's,
stops the start with a message naming the setting and the file. grpc would say much less: a
server with a garbage certificate fails in `add_secure_port` with "Failed to bind", and a client
with a garbage CA fails every call.
"""

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
from pydantic import AfterValidator

_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_ENCRYPTED = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None


def _certificates(path: Path) -> Path:
    pem = _read(path)
    if _CERTIFICATE.search(pem) is None:
        raise ValueError(f"{path} holds no PEM certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=pem.decode("utf-8", errors="replace")
        )
    except ssl.SSLError as error:
        raise ValueError(f"{path} holds no valid PEM certificate ({error.strerror})") from None
    return path


def _private_key(path: Path) -> Path:
    pem = _read(path)
    if _PRIVATE_KEY.search(pem) is None:
        raise ValueError(f"{path} holds no PEM private key")
    if _ENCRYPTED.search(pem) is not None:
        raise ValueError(f"{path} holds an encrypted private key; grpc needs it unencrypted")
    return path


CertificateFile = Annotated[Path, AfterValidator(_certificates)]
"""A readable file of one or more PEM certificates that OpenSSL parses."""
PrivateKeyFile = Annotated[Path, AfterValidator(_private_key)]
"""A readable file holding an unencrypted PEM private key (checked against its certificate by
`check_key_pair`)."""


def check_key_pair(
    cert: tuple[str, Path | None], key: tuple[str, Path | None]
) -> tuple[Path, Path] | None:
    """(certificate file, key file) from two settings given as (name, value): None when neither
    is set; ValueError naming the settings when only one is, or when the key is not the
    certificate's."""
    (cert_name, cert_file), (key_name, key_file) = cert, key
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        missing = cert_name if cert_file is None else key_name
        raise ValueError(f"{missing} is not set: {cert_name} and {key_name} go together")
    try:
        # password: an encrypted key fails instead of OpenSSL prompting on the terminal
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=b"")
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"{key_name} {key_file} is not the private key of {cert_name} {cert_file}"
            ) from None
        raise ValueError(
            f"{key_name} {key_file} holds no valid private key for {cert_name} {cert_file} "
            f"({error.reason or error.strerror})"
        ) from None
    return cert_file, key_file


@dataclass(frozen=True)
class ServerTls:
    """TLS of the gRPC port, from PEM files the settings have checked."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None
    """When set, clients must present a certificate signed by it (mutual TLS)."""

    def credentials(self) -> grpc.ServerCredentials:
        """grpc's server credentials, read from the files now."""
        client_ca = None if self.client_ca_file is None else self.client_ca_file.read_bytes()
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def __str__(self) -> str:
        if self.client_ca_file is None:
            return f"TLS, certificate {self.cert_file}"
        return (
            f"mutual TLS, certificate {self.cert_file}, "
            f"client certificates signed by {self.client_ca_file}"
        )
