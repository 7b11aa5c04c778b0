"""Grafana's files, validated (no Grafana runs here): generated dashboards and rules are fresh,
every datasource uid they use exists, every query reads only documented metrics."""

import json
from typing import Any

import pytest

from monitoring.alerts import render
from monitoring.alerts.rules import RULES
from monitoring.dashboards.__main__ import DASHBOARDS
from monitoring.dashboards.__main__ import path as dashboard_path
from monitoring.dashboards.__main__ import render as render_dashboard
from tests.monitoring.stack import provisioning
from tests.monitoring.stack.paths import (
    GRAFANA_DASHBOARDS,
    GRAFANA_PROVISIONING,
    PROMETHEUS_RULES,
    RUNBOOKS_DOC,
    STACK_DOC,
    TELEMETRY_DOC,
)
from tests.monitoring.stack.promql_names import documented_metrics, metric_names

KNOWN = documented_metrics(TELEMETRY_DOC, STACK_DOC)


def _dashboard_files() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(GRAFANA_DASHBOARDS.glob("*.json"))]


def test_generated_files_are_fresh() -> None:
    """`make generate` was run after the last change to the Python sources."""
    assert PROMETHEUS_RULES.read_text() == render.dump(render.prometheus_rules())
    rules = GRAFANA_PROVISIONING / "alerting" / "rules.yaml"
    assert rules.read_text() == render.dump(render.grafana_rules())
    for dashboard in DASHBOARDS:
        assert dashboard_path(dashboard).read_text() == render_dashboard(dashboard), dashboard.uid
    assert len(list(GRAFANA_DASHBOARDS.glob("*.json"))) == len(DASHBOARDS)


def test_every_query_reads_only_documented_metrics() -> None:
    queries = [
        t["expr"] for d in _dashboard_files() for p in d["panels"] for t in p.get("targets", [])
    ]
    variables = [v["definition"] for d in _dashboard_files() for v in d["templating"]["list"]]
    queries += [v.removeprefix("label_values(").split(",")[0] for v in variables]
    queries += [rule.expr for rule in RULES]
    tempo = provisioning.datasources()["tempo"]["jsonData"]["tracesToMetrics"]["queries"]
    queries += [q["query"] for q in tempo]
    for query in queries:
        names = metric_names(query)
        assert names, query
        assert names <= set(KNOWN), f"{sorted(names - set(KNOWN))} in {query}"


def test_metric_name_parser_sees_what_a_query_reads() -> None:
    """The check above can fail: an undocumented metric is found, label names are not metrics."""
    names = metric_names('sum by (le) (rate(made_up_total{a="b"}[5m])) / on(x) other_metric')
    assert names == {"made_up_total", "other_metric"}


def test_datasource_uids_referenced_exist() -> None:
    uids = set(provisioning.datasources())
    assert uids == {"prometheus", "tempo", "loki"}
    used = {
        p["datasource"]["uid"] for d in _dashboard_files() for p in d["panels"] if "datasource" in p
    }
    used |= {
        t["datasource"]["uid"]
        for d in _dashboard_files()
        for p in d["panels"]
        for t in p.get("targets", [])
    }
    used |= {v["datasource"]["uid"] for d in _dashboard_files() for v in d["templating"]["list"]}
    for group in provisioning.load("alerting/rules.yaml")["groups"]:
        used |= {q["datasourceUid"] for rule in group["rules"] for q in rule["data"]} - {"__expr__"}
    for ds in provisioning.datasources().values():
        data = ds.get("jsonData", {})
        used |= {d["datasourceUid"] for d in data.get("exemplarTraceIdDestinations", [])}
        used |= {d["datasourceUid"] for d in data.get("derivedFields", [])}
        used |= {
            data[k]["datasourceUid"]
            for k in data
            if isinstance(data[k], dict) and "datasourceUid" in data[k]
        }
    assert used
    assert used <= uids, used - uids
    for rule in RULES:  # the Explore links name their datasource by uid too
        links = rule.annotations()["logs_url"] + rule.annotations()["traces_url"]
        assert "%22uid%22%3A%22loki%22" in links
        assert "%22uid%22%3A%22tempo%22" in links


@pytest.mark.parametrize("path", sorted(GRAFANA_PROVISIONING.rglob("*.yaml")), ids=lambda p: p.name)
def test_provisioning_has_no_unexpanded_dollar(path: Any) -> None:
    """Grafana expands `$name` in provisioning files; a literal `$` must be `$$`."""
    assert provisioning.unescaped_dollars(path) == []


def test_exemplars_link_to_tempo_under_both_label_names() -> None:
    destinations = provisioning.datasources()["prometheus"]["jsonData"][
        "exemplarTraceIdDestinations"
    ]
    assert {(d["name"], d["datasourceUid"]) for d in destinations} == {
        ("trace_id", "tempo"),
        ("traceID", "tempo"),
    }


def test_alert_rules_and_policy_are_provisioned() -> None:
    rules = provisioning.load("alerting/rules.yaml")["groups"][0]["rules"]
    assert [r["title"] for r in rules] == [rule.name for rule in RULES]
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert {"summary", "runbook_url", "logs_url", "traces_url"} <= set(rule["annotations"])
    notifications = provisioning.load("alerting/notifications.yaml")
    receiver = notifications["contactPoints"][0]["name"]
    assert notifications["policies"][0]["receiver"] == receiver
    assert all(route["receiver"] == receiver for route in notifications["policies"][0]["routes"])


def test_every_alert_has_a_runbook_section() -> None:
    headings = {
        line[3:].strip() for line in RUNBOOKS_DOC.read_text().splitlines() if line.startswith("## ")
    }
    for rule in RULES:
        assert rule.title in headings, rule.title
        assert rule.annotations()["runbook_url"].endswith("#" + rule.runbook_anchor)
