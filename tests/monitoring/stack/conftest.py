"""Fixtures for the stack tests: the Prometheus tool binaries (Debian packages)."""

import os
import shutil

import pytest


def _binary(name: str, package: str) -> str:
    """Path of `name`; skip without it, except under CI (CI=true), where that fails."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} missing (apt-get install -y {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " under CI")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary."""
    return _binary("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    """The amtool binary."""
    return _binary("amtool", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def alertmanager_binary() -> str:
    """The Alertmanager binary (Debian names it prometheus-alertmanager)."""
    return _binary("prometheus-alertmanager", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def prometheus_server() -> str:
    """The prometheus binary, for the module-scoped live stack."""
    return _binary("prometheus", "prometheus")
