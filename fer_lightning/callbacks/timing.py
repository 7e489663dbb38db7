"""Training speed as logged metrics, so reports can compare cost as well as accuracy."""

from __future__ import annotations

import time
from typing import Any

from lightning import Callback, LightningModule, Trainer


class EpochTimer(Callback):
    """Logs `train/epoch_time_s` and `train/images_per_s` (images seen by the optimiser per wall second).

    The total training time travels in the checkpoint, so a resumed run's `train_time_s` is the time spent
    training before and after the interruption, not the wall-clock gap between them. A run resumed in the middle of
    an epoch gets no `on_train_epoch_start`; its clock then starts at the first batch after the resume.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._images = 0
        self.total_train_time_s = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()
        self._images = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._start is None:  # resumed mid-epoch
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._images += len(batch[1])

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        elapsed = self._elapsed()
        self.total_train_time_s += elapsed
        self._start = None
        pl_module.log("train/epoch_time_s", elapsed)
        pl_module.log("train/images_per_s", self._images * trainer.world_size / max(elapsed, 1e-9))

    def _elapsed(self) -> float:
        return 0.0 if self._start is None else time.perf_counter() - self._start

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint written mid-epoch (interrupted.ckpt) includes the part of the epoch already trained.
        return {"total_train_time_s": self.total_train_time_s + self._elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total_train_time_s = float(state_dict.get("total_train_time_s", 0.0))
