"""The shipped Prometheus rules and configuration, run for real against a real model server and
gateway with injected faults; the shipped Alertmanager routing delivers to the real webhook.

Only what cannot work here is changed: targets point at the local processes (the rest of the
stack at a closed port, so its jobs are down), intervals are 1 s, and every `for` is compressed
from minutes to seconds (5m -> 5s) so the alerts fire within a test.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from monitoring.alerts.webhook import WebhookServer
from tests.model_server.server_process import ServerProcess
from tests.monitoring.stack.paths import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, PROMETHEUS_RULES
from tests.otel.support import free_port

FAULTED_MODELS = ("slow", "failing", "shifted", "crowded", "mislabelled", "hesitant")
"""Copies of digits, each sent one fault; `digits` itself gets only healthy traffic."""
MISLABELLED_LABELS = [str((digit + 1) % 10) for digit in range(10)]
"""mislabelled names class i `i + 1`: wrong on purpose, so its true labels disagree."""
UNLOADABLE = "broken"


class _Hesitant(torch.nn.Module):
    """The digits signature with every class equally likely: confidence 0.1 on every row."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = pixels.shape[0]
        return torch.full((rows, 10), 0.1), torch.zeros(rows, dtype=torch.int64)


def model_repository(root: Path, digits_version: Path) -> Path:
    """digits, its faulted copies (crowded: a one-request queue; mislabelled: its class names
    shifted by one; hesitant: a module that is sure of nothing), and a version that won't
    load."""
    for name in ("digits", *FAULTED_MODELS, UNLOADABLE):
        shutil.copytree(digits_version, root / name / "1")
        config_path = root / name / "1" / "config.json"
        config = json.loads(config_path.read_text())
        config["name"] = name
        if name == "crowded":
            config["dynamic_batching"] = {
                "max_queue_delay_ms": 100,
                "max_queue_size": 1,
                "skip_unproductive_delay": False,
            }
        if name == "mislabelled":
            config["labels"] = MISLABELLED_LABELS
        config_path.write_text(json.dumps(config))
    (root / UNLOADABLE / "1" / "model.pt").write_bytes(b"not a TorchScript archive")
    hesitant = torch.jit.script(_Hesitant())
    hesitant.save(str(root / "hesitant" / "1" / "model.pt"))  # type: ignore[no-untyped-call]
    return root


def prometheus_config(ports: dict[str, int], rules: Path, alertmanager_port: int) -> str:
    """The shipped prometheus.yml aimed at local processes (unlisted jobs at a closed port)."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(rules)]
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}
    ]
    closed = free_port()
    for job in config["scrape_configs"]:
        port = ports.get(job["job_name"], closed)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    return yaml.safe_dump(config, sort_keys=False)


def compressed_rules(path: Path) -> Path:
    """The shipped rule file with every `for` in seconds instead of minutes."""
    rules: dict[str, Any] = yaml.safe_load(PROMETHEUS_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["for"].endswith("m"), rule["for"]
            rule["for"] = rule["for"][:-1] + "s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


def alertmanager_config(webhook_url: str) -> str:
    """The shipped alertmanager.yml with the webhook at `webhook_url` and 1 s grouping."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for route in (config["route"], *config["route"].get("routes", [])):
        route.update(group_wait="1s", group_interval="1s")
    [receiver] = config["receivers"]
    receiver["webhook_configs"][0]["url"] = webhook_url
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class LiveStack:
    """What the tests query: Prometheus' API, the webhook's notifications, the processes."""

    prometheus: Any
    webhook: WebhookServer
    model_server: ServerProcess
