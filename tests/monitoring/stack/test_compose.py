"""docker-compose.yml (no Docker engine here): the Compose Specification schema, run as the
`check-jsonschema` CLI with the copy of the schema that its pinned release vendors, and the
stack's own rules: pinned images, healthchecks, named volumes, few published ports."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.stack.paths import COMPOSE_FILE, REPO

NO_HEALTHCHECK = {"otel-collector", "tempo", "demo-traffic"}
"""No shell or wget in the image (Prometheus probes them); a client with nothing to probe."""
PUBLISHED = {"grafana": "127.0.0.1:3000:3000", "gateway": "127.0.0.1:8000:8000"}


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def _check_jsonschema() -> str:
    path = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert path is not None, "check-jsonschema is a dev dependency (pip install -e '.[dev]')"
    return path


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    command = [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True)


def test_compose_file_passes_the_compose_specification_schema() -> None:
    result = _validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_an_invalid_file(tmp_path: Path) -> None:
    broken = _compose()
    broken["services"]["grafana"]["healthcheck"]["retries"] = "twelve"
    broken["services"]["grafana"]["no_such_key"] = True
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert _validate(path).returncode != 0


def test_every_part_of_the_stack_is_a_service_with_a_pinned_image() -> None:
    services = _compose()["services"]
    assert {
        "model-server",
        "gateway",
        "demo-traffic",
        "otel-collector",
        "prometheus",
        "alertmanager",
        "tempo",
        "loki",
        "grafana",
    } <= set(services)
    for name, service in services.items():
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").is_file(), name
            continue
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), name


def test_healthchecks_volumes_and_published_ports() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        assert ("healthcheck" in service) != (name in NO_HEALTHCHECK), name
        ports = service.get("ports", [])
        if name in PUBLISHED:
            assert PUBLISHED[name] in ports, name
        assert all(port.startswith("127.0.0.1:") for port in ports), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source} is no named volume"
    published = {s for s, service in compose["services"].items() if service.get("ports")}
    assert published == {"grafana", "gateway", "model-server"}


def test_grafana_admin_password_comes_from_the_environment() -> None:
    environment = _compose()["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-inferwatch}"


@pytest.mark.parametrize(
    "line",
    [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")],
)
def test_dockerfile_copies_what_exists(line: str) -> None:
    for source in line.split()[1:-1]:
        assert (REPO / source).exists(), source
