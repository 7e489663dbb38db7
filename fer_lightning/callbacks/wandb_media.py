"""W&B extras beyond scalars: the test confusion matrix as an image and a per-class accuracy table."""

from __future__ import annotations

import matplotlib.pyplot as plt
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from fer_lightning.plots import confusion_matrix_figure


class WandbConfusionMatrix(Callback):
    """On test end, sends the confusion matrix (image) and per-class accuracy (table) to every W&B logger."""

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = getattr(pl_module, "confusion_matrices", {}).get("test")
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if matrix is None or not loggers or trainer.global_rank != 0:
            return
        import wandb

        names = list(pl_module.class_names)
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "name", "unknown")
        fig = confusion_matrix_figure(matrix, names, f"test confusion matrix ({dataset})")
        rows = [[name, int(matrix[i].sum()), float(matrix[i, i] / max(matrix[i].sum(), 1))]
                for i, name in enumerate(names)]
        for logger in loggers:
            logger.experiment.log({
                "test/confusion_matrix": wandb.Image(fig),
                "test/per_class": wandb.Table(columns=["class", "support", "accuracy"], data=rows),
            })
        plt.close(fig)
