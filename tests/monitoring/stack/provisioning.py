"""Grafana provisioning files as Grafana reads them (after its `$$` -> `$` expansion)."""

import re
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.stack.paths import GRAFANA_PROVISIONING

_UNESCAPED_DOLLAR = re.compile(r"(?<!\$)\$(?!\$)")


def unescaped_dollars(path: Path) -> list[str]:
    """Lines with a `$` Grafana would expand as an environment variable (text without `$$`)."""
    text = path.read_text(encoding="utf-8").replace("$$", "")
    return [line for line in text.splitlines() if _UNESCAPED_DOLLAR.search(line)]


def load(relative: str) -> Any:
    """A provisioning file's content with `$$` turned into `$`, as Grafana sees it."""
    text = (GRAFANA_PROVISIONING / relative).read_text(encoding="utf-8")
    return yaml.safe_load(text.replace("$$", "$"))


def datasources() -> dict[str, dict[str, Any]]:
    """The provisioned datasources by uid."""
    return {ds["uid"]: ds for ds in load("datasources/datasources.yaml")["datasources"]}
