"""A small typed model of a Grafana dashboard (schema as provisioned from JSON files)."""

from dataclasses import dataclass, field
from typing import Any, Literal

from monitoring.alerts.grafana import PROMETHEUS_UID

MODEL_VARIABLE = "model"
"""`$model`: the model names to show (all by default)."""
SCHEMA_VERSION = 39
_DATASOURCE = {"type": "prometheus", "uid": PROMETHEUS_UID}
_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """A visualisation: a title, its queries, the unit of its values."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: Literal["timeseries", "stat", "table", "heatmap"] = "timeseries"
    exemplars: bool = False
    """Show exemplars (trace ids) on the graph; they link to Tempo through the datasource."""
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Row:
    """A titled row of panels."""

    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    """A dashboard; `uid` is also its file name."""

    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    model_filter: bool = True
    """Whether the dashboard has the `$model` variable."""
    tags: tuple[str, ...] = field(default=("inferwatch",))

    def panels(self) -> list[Panel]:
        """Every panel, in order."""
        return [panel for row in self.rows for panel in row.panels]

    def to_json(self) -> dict[str, Any]:
        """The dashboard JSON Grafana provisions."""
        panels: list[dict[str, Any]] = []
        y = 0
        for row in self.rows:
            panels.append(
                {
                    "id": len(panels) + 1,
                    "type": "row",
                    "title": row.title,
                    "collapsed": False,
                    "gridPos": {"x": 0, "y": y, "w": _WIDTH, "h": 1},
                    "panels": [],
                }
            )
            y, x = y + 1, 0
            for panel in row.panels:
                if x + panel.width > _WIDTH:
                    y, x = y + 8, 0
                panels.append(_panel_json(panel, len(panels) + 1, x, y))
                x += panel.width
            y += 8
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "timezone": "browser",
            "editable": True,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s",
            "annotations": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["inferwatch"],
                    "asDropdown": False,
                    "includeVars": True,
                    "keepTime": True,
                    "title": "InferWatch",
                }
            ],
            "templating": {"list": [_model_variable()] if self.model_filter else []},
            "panels": panels,
        }


def _model_variable() -> dict[str, Any]:
    definition = "label_values(inferwatch_model_ready, model_name)"
    return {
        "name": MODEL_VARIABLE,
        "label": "Model",
        "type": "query",
        "datasource": dict(_DATASOURCE),
        "definition": definition,
        "query": {"query": definition, "refId": "model"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "refId": chr(ord("A") + index),
            "datasource": dict(_DATASOURCE),
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "instant": query.instant or panel.kind == "table",
            "range": not (query.instant or panel.kind == "table"),
            "exemplar": panel.exemplars,
            **({"format": "heatmap"} if panel.kind == "heatmap" else {}),
            **({"format": "table"} if panel.kind == "table" else {}),
        }
        for index, query in enumerate(panel.queries)
    ]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": 8},
        "datasource": dict(_DATASOURCE),
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
    }
