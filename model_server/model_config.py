"""The per-version model configuration file (`config.json`) and its validation."""

import json
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_FILE = "config.json"

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64",
]  # fmt: skip


class ModelConfigError(Exception):
    """A model's config file is missing, unreadable or invalid."""


class TensorSpec(BaseModel):
    """One input or output of a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    """Tensor name as clients send it."""
    datatype: Datatype
    """Open Inference Protocol datatype."""
    shape: tuple[int, ...]
    """Full shape; the first dimension is the batch and must be -1, the rest fixed and positive."""
    finite: bool = False
    """Inputs only: refuse NaN and infinite values (floating-point datatypes) with
    INVALID_ARGUMENT instead of passing them to the model."""

    @model_validator(mode="after")
    def _batched_fixed_shape(self) -> Self:
        if not self.shape or self.shape[0] != -1:
            raise ValueError(
                f"tensor {self.name!r}: shape must start with -1 (the batch dimension)"
            )
        if any(dim <= 0 for dim in self.shape[1:]):
            raise ValueError(
                f"tensor {self.name!r}: dimensions after the batch must be positive, got "
                f"{list(self.shape)}"
            )
        return self


class DynamicBatchingConfig(BaseModel):
    """How requests for one model version are gathered into batches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Gather concurrent requests into one forward pass; when false each request runs alone."""
    max_queue_delay_ms: Annotated[float, Field(ge=0, le=10_000)] = 2.0
    """Longest a request waits for others to join its batch."""
    skip_unproductive_delay: bool = True
    """Send batches without waiting while recent waits gathered on average under half a row
    (lone or sparse requests then pay no delay); every 128th batch still waits, to notice when
    traffic picks up. False always waits the full delay."""
    poll_while_waiting: bool = True
    """Spend the last 2 ms of a batch's wait for more requests (all of it under the default
    delay) polling the event loop instead of sleeping until a timer: arrivals are taken in
    without a wake-up, for at most 2 ms of CPU per batch, and only while waits gather rows.
    False sleeps through the whole wait."""
    max_queue_size: Annotated[int, Field(ge=1)] = 1024
    """Requests waiting beyond this are rejected at once with RESOURCE_EXHAUSTED."""


class MonitoringConfig(BaseModel):
    """What the model-quality telemetry reads from a model's outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probabilities_output: str | None = None
    """Output holding class probabilities [-1, len(labels)]: its highest value is recorded as
    the prediction's confidence and its argmax counted as the predicted label."""
    drift_window_rows: Annotated[int, Field(ge=1)] | None = 1000
    """Drift is judged over at most this many recent rows (None: by age only)."""
    drift_window_seconds: Annotated[float, Field(gt=0)] | None = 300.0
    """...and over rows at most this old (None: by count only)."""
    drift_top_k: Annotated[int, Field(ge=1)] | None = None
    """Monitor only the k features of largest reference spread (None: all features)."""

    @model_validator(mode="after")
    def _bounded_window(self) -> Self:
        if self.drift_window_rows is None and self.drift_window_seconds is None:
            raise ValueError(
                "drift_window_rows and drift_window_seconds are both null: the drift window "
                "needs a row bound, an age bound or both"
            )
        return self


class ModelConfig(BaseModel):
    """Contents of `<repository>/<model>/<version>/config.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    """Optional; when set it must equal the model's directory name."""
    platform: Literal["pytorch_torchscript"] = "pytorch_torchscript"
    """Model format; only TorchScript is served."""
    model_file: str = "model.pt"
    """TorchScript file inside the version directory."""
    inputs: Annotated[list[TensorSpec], Field(min_length=1)]
    """Inputs, in the order the module's forward() takes them."""
    outputs: Annotated[list[TensorSpec], Field(min_length=1)]
    """Outputs, in the order the module's forward() returns them."""
    max_batch_size: Annotated[int, Field(ge=1)] = 64
    """Most rows in one request and in one batch."""
    dynamic_batching: DynamicBatchingConfig = DynamicBatchingConfig()
    """Batching behaviour."""
    labels: list[str] | None = None
    """Class labels: the class index i of a classifier means labels[i]."""
    monitoring: MonitoringConfig = MonitoringConfig()
    """Model-quality telemetry."""

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [spec.name for spec in specs]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {duplicates}")
        probabilities = self.monitoring.probabilities_output
        if probabilities is not None:
            spec = next((s for s in self.outputs if s.name == probabilities), None)
            if spec is None:
                raise ValueError(f"monitoring.probabilities_output {probabilities!r} is no output")
            if not self.labels or spec.shape != (-1, len(self.labels)):
                raise ValueError(
                    f"monitoring.probabilities_output {probabilities!r} must have shape "
                    "[-1, len(labels)] and labels must be set"
                )
        return self

    def output_index(self, name: str) -> int:
        """Position of an output in the module's return value."""
        return [spec.name for spec in self.outputs].index(name)

    @classmethod
    def load(cls, version_dir: Path) -> "ModelConfig":
        """Read and validate the config file of one model version directory."""
        path = version_dir / CONFIG_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelConfigError(f"{path}: missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelConfigError(f"{path}: unreadable: {exc}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelConfigError(f"{path}: invalid: {exc}") from None
