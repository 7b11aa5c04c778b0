"""What the model says, per batch: confidence and predicted labels as metrics, and the rows
and answers that feed the drift monitor's window. Runs on the inference thread."""

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from model_server import telemetry
from model_server.batcher import BatchObserver
from model_server.model_config import ModelConfig
from monitoring.drift import REFERENCE_FILE, DriftConfig, DriftMonitor, Reference

logger = logging.getLogger(__name__)


class DriftWatch(NamedTuple):
    """A version's drift monitor and which of its inputs feeds it."""

    monitor: DriftMonitor
    input_index: int


def load_drift_watch(
    version_dir: Path, config: ModelConfig, name: str, version: int
) -> DriftWatch | None:
    """A monitor when the version directory holds a usable drift reference, else None."""
    path = version_dir / REFERENCE_FILE
    if not path.exists():
        return None
    try:
        reference = Reference.load(path)
    except Exception as exc:  # a broken reference costs drift monitoring, never the model
        logger.warning("model %s:%d: drift reference %s unusable: %s", name, version, path, exc)
        return None
    inputs = [spec.name for spec in config.inputs]
    if reference.input is not None and reference.input not in inputs:
        logger.warning(
            "model %s:%d: drift reference describes input %r, the model has %s; drift not "
            "monitored",
            name,
            version,
            reference.input,
            inputs,
        )
        return None
    index = inputs.index(reference.input) if reference.input else 0
    spec = config.inputs[index]
    features = len(reference.features)
    # The monitor takes [rows, features]: any other input would fail it on every batch.
    if features and spec.shape[1:] != (features,):
        logger.warning(
            "model %s:%d: drift reference describes %d features, input %r has shape %s (not "
            "[-1, %d]); drift not monitored",
            name,
            version,
            features,
            spec.name,
            list(spec.shape),
            features,
        )
        return None
    monitoring = config.monitoring
    drift_config = DriftConfig(
        window_rows=monitoring.drift_window_rows,
        window_seconds=monitoring.drift_window_seconds,
        top_k=monitoring.drift_top_k,
    )
    monitor = DriftMonitor(reference, drift_config, model=name, version=str(version))
    return DriftWatch(monitor, index)


def batch_observer(
    config: ModelConfig, attributes: Mapping[str, str], drift: DriftWatch | None
) -> BatchObserver | None:
    """The per-batch observer for one version, or None when there is nothing to observe."""
    probabilities = config.monitoring.probabilities_output
    probabilities_index = None if probabilities is None else config.output_index(probabilities)
    labels = config.labels or []
    if probabilities_index is None and drift is None:
        return None

    def observe(inputs: Sequence[np.ndarray], outputs: list[np.ndarray]) -> None:
        answers = None if probabilities_index is None else outputs[probabilities_index]
        if answers is not None:
            telemetry.record_predictions(answers, labels, attributes)
        if drift is not None:
            drift.monitor.update(inputs[drift.input_index], probabilities=answers)

    return observe
