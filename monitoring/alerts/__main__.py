"""`python -m monitoring.alerts [--check]`: write (or check) the rule files generated from RULES."""

import argparse
import logging
import sys
from pathlib import Path

from monitoring.alerts import render

logger = logging.getLogger(__name__)

STACK = Path(__file__).resolve().parents[1] / "stack"
OUTPUTS = {
    STACK / "prometheus" / "rules" / "inferwatch.rules.yml": render.prometheus_rules,
    STACK / "grafana" / "provisioning" / "alerting" / "rules.yaml": render.grafana_rules,
}


def main() -> int:
    """Writes every output; with --check, writes nothing and exits 1 when one is stale."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    stale = []
    check = parser.parse_args().check
    for path, build in OUTPUTS.items():
        text = render.dump(build())
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        logger.info("wrote %s", path)
    for path in stale:
        logger.error("%s is stale: run `make generate`", path)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
