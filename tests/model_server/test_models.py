"""Builders for the small TorchScript models the model-server tests serve."""

import json
from pathlib import Path

import torch
from torch import nn

from model_server.model_config import (
    CONFIG_FILE,
    DynamicBatchingConfig,
    ModelConfig,
    MonitoringConfig,
    TensorSpec,
)


class Probe(nn.Module):
    """x [N, 4] -> (x * factor, batch size per row, rows computed so far per row).

    The last two outputs let a test see which batch its rows ran in and whether a
    request it gave up on was ever computed. Any value below -1000 makes it raise.
    """

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.seen = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if bool(torch.any(x < -1000.0)):
            raise RuntimeError("probe: asked to fail")
        rows = x.shape[0]
        self.seen += rows
        batch = torch.full([rows], rows, dtype=torch.int64)
        seen = torch.full([rows], self.seen, dtype=torch.int64)
        return x * self.factor, batch, seen


PROBE_WIDTH = 4


def probe_config(
    *, max_batch_size: int = 16, delay_ms: float = 2.0, queue_size: int = 64, batching: bool = True
) -> ModelConfig:
    """Signature of the probe model. Its queue delay is always waited out: tests hold requests
    in the queue with it (a "slow" model), so the batcher must not learn to skip it."""
    return ModelConfig(
        inputs=[TensorSpec(name="x", datatype="FP32", shape=(-1, PROBE_WIDTH))],
        outputs=[
            TensorSpec(name="y", datatype="FP32", shape=(-1, PROBE_WIDTH)),
            TensorSpec(name="batch", datatype="INT64", shape=(-1,)),
            TensorSpec(name="seen", datatype="INT64", shape=(-1,)),
        ],
        max_batch_size=max_batch_size,
        dynamic_batching=DynamicBatchingConfig(
            enabled=batching,
            max_queue_delay_ms=delay_ms,
            max_queue_size=queue_size,
            skip_unproductive_delay=False,
        ),
    )


def write_probe(version_dir: Path, config: ModelConfig, factor: float = 2.0) -> None:
    """Save a probe model version."""
    version_dir.mkdir(parents=True)
    scripted = torch.jit.script(Probe(factor))
    scripted.save(str(version_dir / config.model_file))  # type: ignore[no-untyped-call]
    write_config(version_dir, config)


class Softmax(nn.Module):
    """x [N, 2] -> class probabilities; a row holding NaN or infinity gives NaN probabilities."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


def write_softmax(version_dir: Path) -> None:
    """Save a two-class classifier with labels "a" and "b" whose probabilities are monitored."""
    version_dir.mkdir(parents=True)
    torch.jit.script(Softmax()).save(str(version_dir / "model.pt"))  # type: ignore[no-untyped-call]
    write_config(
        version_dir,
        ModelConfig(
            inputs=[TensorSpec(name="x", datatype="FP32", shape=(-1, 2))],
            outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=(-1, 2))],
            labels=["a", "b"],
            monitoring=MonitoringConfig(probabilities_output="probabilities"),
        ),
    )


def write_config(version_dir: Path, config: ModelConfig | dict[str, object]) -> None:
    """Write a config file (a dict lets a test write an invalid one)."""
    version_dir.mkdir(parents=True, exist_ok=True)
    raw = config.model_dump(exclude_none=True) if isinstance(config, ModelConfig) else config
    (version_dir / CONFIG_FILE).write_text(json.dumps(raw), encoding="utf-8")
