"""Training speed as logged metrics, so reports can compare cost as well as accuracy."""

from __future__ import annotations

import time
from typing import Any

from lightning import Callback, LightningModule, Trainer


class EpochTimer(Callback):
    """Logs `train/epoch_time_s` and `train/images_per_s` (images seen by the optimiser per wall second)."""

    def __init__(self) -> None:
        self._start = 0.0
        self._images = 0
        self.total_train_time_s = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._images += len(batch[1])

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        elapsed = time.perf_counter() - self._start
        self.total_train_time_s += elapsed
        pl_module.log("train/epoch_time_s", elapsed)
        pl_module.log("train/images_per_s", self._images * trainer.world_size / max(elapsed, 1e-9))
