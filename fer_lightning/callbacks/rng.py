"""Random-generator state in every checkpoint, so a resumed run draws the same numbers as an uninterrupted one.

Lightning restores weights, optimizer, schedulers, loops and callback states, but not the generators: after a
resume the shuffling order, the augmentation seeds (drawn from torch's generator, see `data/dataset.py`), dropout
and Mixup/CutMix would all differ from the run that was interrupted.

The states are captured when the checkpoint is written (end of validation, after which nothing draws before
the next epoch's loader iterator is created) and put back when the checkpoint is loaded. Between loading and the
first training iterator Lightning only runs the sanity-check validation, inside its own `isolate_rng()`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning import Callback


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python generators, as plain types a `weights_only` load accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position), int(has_gauss),
                  float(cached_gaussian)],
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


class RNGState(Callback):
    """Saves the generators with each checkpoint and restores them when a checkpoint is loaded."""

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_rng_state(state_dict)
