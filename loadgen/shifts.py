"""Input shifts that move the digits inputs away from the training data, so drift fires."""

from collections.abc import Callable

import numpy as np

Shift = Callable[[np.ndarray], np.ndarray]


def _noise(pixels: np.ndarray) -> np.ndarray:
    noisy = pixels + np.random.default_rng(0).normal(0.0, 4.0, pixels.shape)
    return np.clip(noisy, 0, 16).astype(np.float32)


def _brightness(pixels: np.ndarray) -> np.ndarray:
    return np.clip(pixels + 4.0, 0, 16).astype(np.float32)


def _invert(pixels: np.ndarray) -> np.ndarray:
    return (16.0 - pixels).astype(np.float32)


#: By name: none, gaussian noise (sigma 4), brightness +4, inverted pixels (all in 0..16).
SHIFTS: dict[str, Shift] = {
    "none": lambda pixels: pixels,
    "noise": _noise,
    "brightness": _brightness,
    "invert": _invert,
}
