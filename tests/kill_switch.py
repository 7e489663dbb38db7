"""Test-only callbacks that stop a training process the hard way, as a crash or an operator would."""

from __future__ import annotations

import os
import signal

from lightning import Callback, LightningModule, Trainer


class KillAt(Callback):
    """Sends `signal` to its own process at (`epoch`, `batch`): SIGKILL is a crash, SIGINT is Ctrl-C."""

    def __init__(self, epoch: int, batch: int, signal_name: str = "SIGKILL") -> None:
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, signal_name)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)

