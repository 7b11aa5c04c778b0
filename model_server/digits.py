"""The embedded default model: a small MLP on scikit-learn's bundled 8x8 digits.

Training is deterministic and needs no download. The saved version directory
holds the TorchScript module, its config, and the drift monitor's reference: the
training set's per-feature distributions (see monitoring/drift/METHOD.md).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from model_server.model_config import (
    CONFIG_FILE,
    DynamicBatchingConfig,
    ModelConfig,
    MonitoringConfig,
    TensorSpec,
)
from monitoring.drift import REFERENCE_FILE, Reference, build_reference

logger = logging.getLogger(__name__)

MODEL_NAME = "digits"
N_FEATURES = 64
N_CLASSES = 10
_SEED = 0
_EPOCHS = 300


@dataclass(frozen=True)
class DigitsSplit:
    """The deterministic train/test split; pixels are FP32 in 0..16."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_split() -> DigitsSplit:
    """The same 80/20 stratified split every time."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.2, random_state=_SEED, stratify=y
    )
    return DigitsSplit(x_train, x_test, y_train, y_test)


class DigitsClassifier(nn.Module):
    """pixels [N, 64] in 0..16 -> (probabilities [N, 10], label [N])."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised class scores."""
        result: torch.Tensor = self.net(pixels / 16.0)
        return result

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities and the most likely class."""
        probabilities = torch.softmax(self.logits(pixels), dim=1)
        return probabilities, torch.argmax(probabilities, dim=1)


def train(split: DigitsSplit) -> tuple[DigitsClassifier, float]:
    """Full-batch Adam from a fixed seed; returns the model and its test accuracy."""
    torch.manual_seed(_SEED)
    model = DigitsClassifier()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.from_numpy(split.x_train)
    y = torch.from_numpy(split.y_train)
    for _ in range(_EPOCHS):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model.logits(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    model.eval()
    with torch.inference_mode():
        _, predicted = model(torch.from_numpy(split.x_test))
    accuracy = float((predicted.numpy() == split.y_test).mean())
    return model, accuracy


#: Rows in the held-out split. The drift window holds no more: traffic that replays the split
#: (`make run`, `inferwatch-load`) would otherwise fill a larger window with repeated rows, which
#: the drift tests count as independent evidence, and clean replays were called drifted.
HELD_OUT_ROWS = 360


def config() -> ModelConfig:
    """The digits model's signature, batching and monitoring."""
    return ModelConfig(
        name=MODEL_NAME,
        inputs=[TensorSpec(name="pixels", datatype="FP32", shape=(-1, N_FEATURES), finite=True)],
        outputs=[
            TensorSpec(name="probabilities", datatype="FP32", shape=(-1, N_CLASSES)),
            TensorSpec(name="label", datatype="INT64", shape=(-1,)),
        ],
        max_batch_size=64,
        dynamic_batching=DynamicBatchingConfig(max_queue_delay_ms=2.0, max_queue_size=1024),
        labels=[str(digit) for digit in range(N_CLASSES)],
        monitoring=MonitoringConfig(
            probabilities_output="probabilities", drift_window_rows=HELD_OUT_ROWS
        ),
    )


def drift_reference(model: DigitsClassifier, split: DigitsSplit) -> Reference:
    """The drift monitor's reference: training-set pixels, and the model's answers on the
    held-out split (it is more confident on rows it was trained on)."""
    with torch.inference_mode():
        probabilities, predicted = model(torch.from_numpy(split.x_test))
    return build_reference(
        split.x_train,
        feature_names=[f"pixel_{i}" for i in range(N_FEATURES)],
        labels=predicted.numpy(),
        label_names=[str(digit) for digit in range(N_CLASSES)],
        confidence=probabilities.max(dim=1).values.numpy(),
        input_name="pixels",
    )


def save_version(version_dir: Path) -> float:
    """Train, then write model.pt, config.json and the reference statistics; returns accuracy."""
    split = load_split()
    model, accuracy = train(split)
    version_dir.mkdir(parents=True, exist_ok=True)
    model_config = config()
    scripted = torch.jit.script(model)
    scripted.save(str(version_dir / model_config.model_file))  # type: ignore[no-untyped-call]
    (version_dir / CONFIG_FILE).write_text(
        model_config.model_dump_json(indent=2, exclude_none=True), encoding="utf-8"
    )
    drift_reference(model, split).save(version_dir / REFERENCE_FILE)
    return accuracy


def ensure_default_model(repository: Path) -> None:
    """Create `digits` version 1 when the repository holds no model directory."""
    if repository.is_dir() and any(p.is_dir() for p in repository.iterdir()):
        return
    target = repository / MODEL_NAME / "1"
    logger.info(
        "model repository %s is empty; training the default %s model", repository, MODEL_NAME
    )
    accuracy = save_version(target)
    logger.info("trained %s: test accuracy %.4f, saved to %s", MODEL_NAME, accuracy, target)
