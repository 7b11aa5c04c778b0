"""`python -m monitoring.dashboards [--check]`: write (or check) the dashboard JSON files."""

import argparse
import json
import logging
import sys
from pathlib import Path

from monitoring.dashboards import pipeline, quality, service
from monitoring.dashboards.model import Dashboard

logger = logging.getLogger(__name__)

DASHBOARDS: tuple[Dashboard, ...] = (service.DASHBOARD, quality.DASHBOARD, pipeline.DASHBOARD)
DIRECTORY = Path(__file__).resolve().parents[1] / "stack" / "grafana" / "dashboards"


def render(dashboard: Dashboard) -> str:
    """The JSON text of a dashboard file."""
    return json.dumps(dashboard.to_json(), indent=2, ensure_ascii=False) + "\n"


def path(dashboard: Dashboard) -> Path:
    """Where a dashboard's file lives."""
    return DIRECTORY / f"{dashboard.uid}.json"


def main() -> int:
    """Writes every dashboard; with --check, writes nothing and exits 1 when one is stale."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    check = parser.parse_args().check
    stale = [d for d in DASHBOARDS if not path(d).exists() or path(d).read_text() != render(d)]
    if check:
        for dashboard in stale:
            logger.error("%s is stale: run `make generate`", path(dashboard))
        return 1 if stale else 0
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    for dashboard in DASHBOARDS:
        path(dashboard).write_text(render(dashboard), encoding="utf-8")
        logger.info("wrote %s", path(dashboard))
    return 0


if __name__ == "__main__":
    sys.exit(main())
