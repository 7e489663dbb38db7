"""What every emotion classifier shares, whatever runs it (PyTorch or onnxruntime).

Its own module so that both back ends import it and neither imports the other at load time: this module needs
numpy only, which keeps the torch-free onnxruntime path free of torch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from fer_lightning.preprocessing import Transform


@runtime_checkable
class EmotionClassifier(Protocol):
    """What the recogniser needs from a model."""

    class_names: tuple[str, ...]
    eval_transform: Transform

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 prepared faces -> (N, num_classes) float32 probabilities."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, shifted by the row maximum so that large logits cannot overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
