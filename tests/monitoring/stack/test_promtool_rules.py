"""The generated Prometheus rules, run by promtool: `check rules`, and `test rules` where each
alert fires on its fault (with its labels and rendered annotations) and stays quiet without it."""

import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from monitoring.alerts.rules import RULES, AlertRule
from tests.monitoring.stack.paths import PROMETHEUS_RULES
from tests.monitoring.stack.rule_scenarios import SCENARIOS

_LABEL = re.compile(r"\{\{ \.Labels\.(\w+)( \| urlquery)? \}\}")


def _render(template: str, labels: dict[str, str]) -> str:
    """What Go's text/template makes of our annotation templates (urlquery = QueryEscape)."""

    def value(match: re.Match[str]) -> str:
        raw = labels[match.group(1)]
        return urllib.parse.quote_plus(raw, safe="") if match.group(2) else raw

    return _LABEL.sub(value, template)


def _unit_test(rule: AlertRule) -> dict[str, object]:
    scenario = SCENARIOS[rule.name]
    labels = {**scenario.firing, "severity": rule.severity}
    annotations = {key: _render(text, labels) for key, text in rule.annotations().items()}
    return {
        "rule_files": [str(PROMETHEUS_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series, "values": values}
                    for series, values in scenario.series.items()
                ],
                "alert_rule_test": [
                    {"eval_time": scenario.early_at, "alertname": rule.name, "exp_alerts": []},
                    {
                        "eval_time": scenario.fault_at,
                        "alertname": rule.name,
                        "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}],
                    },
                ],
            }
        ],
    }


def test_promtool_checks_the_rule_file(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS_RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


def test_every_rule_has_a_fault_scenario() -> None:
    assert sorted(SCENARIOS) == sorted(rule.name for rule in RULES)


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_rule_fires_on_its_fault_only(rule: AlertRule, promtool: str, tmp_path: Path) -> None:
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(_unit_test(rule), sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_fails_when_the_fault_is_removed(promtool: str, tmp_path: Path) -> None:
    """The harness can fail: with the faulty subject healthy, the expected alert is missing."""
    rule = RULES[0]
    unit = _unit_test(rule)
    healthy = {s: v for s, v in SCENARIOS[rule.name].series.items() if "slow" not in s}
    unit["tests"][0]["input_series"] = [  # type: ignore[index]
        {"series": s, "values": v} for s, v in healthy.items()
    ]
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(unit, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode != 0
