"""Shared data for the drift tests: the digits split and the trained model's predictions."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from model_server import digits
from monitoring.drift import Reference, build_reference

LABEL_NAMES = [str(i) for i in range(digits.N_CLASSES)]
FEATURE_NAMES = [f"pixel_{i}" for i in range(digits.N_FEATURES)]


@dataclass(frozen=True)
class DigitsData:
    """The split, and the model's answers on it."""

    split: digits.DigitsSplit
    model: digits.DigitsClassifier

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [rows, 10], labels [rows]) of the trained model."""
        with torch.inference_mode():
            probabilities, labels = self.model(torch.from_numpy(x.astype(np.float32)))
        return probabilities.numpy(), labels.numpy()


@pytest.fixture(scope="session")
def digits_data() -> DigitsData:
    """The deterministic split and the model trained on it (a few seconds, once)."""
    split = digits.load_split()
    model, _ = digits.train(split)
    return DigitsData(split, model)


@pytest.fixture(scope="session")
def digits_reference(digits_data: DigitsData) -> Reference:
    """Training inputs, and the model's labels and confidence on them."""
    probabilities, labels = digits_data.predict(digits_data.split.x_train)
    return build_reference(
        digits_data.split.x_train,
        feature_names=FEATURE_NAMES,
        labels=labels,
        label_names=LABEL_NAMES,
        confidence=probabilities.max(axis=1),
        input_name="pixels",
    )
