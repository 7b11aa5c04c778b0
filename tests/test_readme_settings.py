"""The README's settings tables and the settings classes must agree: every variable, its
default, and nothing the code does not read."""

import json
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from model_server.settings import ModelServerSettings

README = Path(__file__).resolve().parents[1] / "README.md"
_ROW = re.compile(r"^\| (?P<names>[^|]+) \| (?P<defaults>[^|]+) \|")
_CODE = re.compile(r"`([^`]+)`")
_AS_MODEL_SERVER = "as for the model server"
MODEL_SERVER = "MODEL_SERVER_"


def _documented(prefix: str) -> dict[str, str | None]:
    """Variable -> default, from the table rows whose first cell names `prefix` variables."""
    documented: dict[str, str | None] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        names = [n for n in _CODE.findall(row["names"]) if n.startswith(prefix)]
        if not names or not row["names"].lstrip().startswith(f"`{prefix}"):
            continue
        cell = row["defaults"].strip()
        if cell == "unset":
            defaults: list[str | None] = [None] * len(names)
        elif cell == _AS_MODEL_SERVER:
            model_server = _documented(MODEL_SERVER)
            defaults = [model_server[MODEL_SERVER + n.removeprefix(prefix)] for n in names]
        else:
            defaults = list(_CODE.findall(cell))
        assert len(defaults) == len(names), f"README row {line!r}: one default per variable"
        for name, default in zip(names, defaults, strict=True):
            assert name not in documented, f"{name} is documented twice"
            documented[name] = default
    return documented


def _as_readme(value: Any) -> Any:
    """A default as the README writes it, parsed back: JSON where it is JSON, else text."""
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _as_readme(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_as_readme(v) for v in value]
    return value


def _parsed(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@pytest.mark.parametrize(
    ("settings", "prefix"),
    [(ModelServerSettings, MODEL_SERVER), (GatewaySettings, "GATEWAY_")],
)
def test_every_setting_is_in_the_readme_with_its_default(
    settings: type[BaseSettings], prefix: str
) -> None:
    documented = _documented(prefix)
    fields = {prefix + name.upper(): field for name, field in settings.model_fields.items()}

    assert sorted(documented) == sorted(fields)
    for name, field in fields.items():
        assert _parsed(documented[name]) == _as_readme(field.get_default()), name
