"""`ModelCheckpoint` that a run resumed into a new output directory can continue exactly.

Every run, resumed ones included, gets its own Hydra output directory. Lightning's `ModelCheckpoint` forgets the
best score when the checkpoint directory changed, so after a resume the first epoch always becomes "best" and a
tie later on picks a different checkpoint than the uninterrupted run would. Here the selection state is always
restored, and files of the earlier run that the selection supersedes are left where they are: a resumed run never
deletes another run's checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint


class ResumableModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose best score, top-k and last paths survive a change of directory."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})

    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if self.dirpath is not None and Path(filepath).resolve().parent != Path(self.dirpath).resolve():
            return  # a checkpoint of the run this one resumed from: keep it
        super()._remove_checkpoint(trainer, filepath)


class InterruptCheckpoint(OnExceptionCheckpoint):
    """`checkpoints/interrupted.ckpt` when fitting stops on Ctrl-C or an error, once at least one step was taken.

    A failure during setup (bad config, missing data) saves nothing: an untrained checkpoint would only be
    picked up by a later `ckpt_path=<run dir>` as the newest one.
    """

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.global_step > 0:
            super().on_exception(trainer, pl_module, exception)
