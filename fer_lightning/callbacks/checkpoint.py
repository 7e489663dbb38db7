"""`ModelCheckpoint` that a run resumed into a new output directory can continue exactly.

Every run, resumed ones included, gets its own Hydra output directory. Lightning's `ModelCheckpoint` forgets the
best score when the checkpoint directory changed, so after a resume the first epoch always becomes "best" and a
tie later on picks a different checkpoint than the uninterrupted run would. Here the selection state is always
restored, and files of the earlier run that the selection supersedes are left where they are: a resumed run never
deletes another run's checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint


class ResumableModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose best score, top-k and last paths survive a change of directory."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})

    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if self.dirpath is not None and Path(filepath).resolve().parent != Path(self.dirpath).resolve():
            return  # a checkpoint of the run this one resumed from: keep it
        super()._remove_checkpoint(trainer, filepath)


class InterruptCheckpoint(Checkpoint):
    """`checkpoints/interrupted.ckpt` when fitting stops on Ctrl-C or an error, once at least one step was taken.

    A failure during setup (bad config, missing data) saves nothing: an untrained checkpoint would only be
    picked up by a later `ckpt_path=<run dir>` as the newest one. Lightning's own `OnExceptionCheckpoint` does the
    same saving, but its mere presence makes every fresh `fit(ckpt_path=None)` look for a "last" checkpoint and
    print two warnings that read as if resuming were broken; this class is not one, so fresh runs start quietly.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        super().__init__()
        if not filename:
            raise ValueError("callbacks.interrupted_checkpoint.filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.global_step > 0:
            trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)  # a run that ended normally needs no interrupt checkpoint
