"""W&B extras beyond scalars: the test confusion matrix, a per-class table, and sample predictions with images."""

from __future__ import annotations

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from fer_lightning.data.dataset import to_model_input
from fer_lightning.plots import confusion_matrix_figure


class WandbConfusionMatrix(Callback):
    """On test end, sends to every W&B logger: `test/confusion_matrix` (image), `test/per_class` (table) and
    `test/samples` (the first `num_samples` test faces with true and predicted emotion and confidence)."""

    def __init__(self, num_samples: int = 32) -> None:
        self.num_samples = num_samples

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = getattr(pl_module, "confusion_matrices", {}).get("test")
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if matrix is None or not loggers or trainer.global_rank != 0:
            return
        import wandb

        names = list(pl_module.class_names)
        datamodule = trainer.datamodule
        fig = confusion_matrix_figure(matrix, names, f"test confusion matrix ({datamodule.name})")
        per_class = [[name, int(matrix[i].sum()), float(matrix[i, i] / max(matrix[i].sum(), 1))]
                     for i, name in enumerate(names)]
        samples = wandb.Table(columns=["face", "true", "predicted", "confidence", "correct"],
                              data=self._sample_rows(pl_module, datamodule, names, wandb))
        for logger in loggers:
            logger.experiment.log({
                "test/confusion_matrix": wandb.Image(fig),
                "test/per_class": wandb.Table(columns=["class", "support", "accuracy"], data=per_class),
                "test/samples": samples,
            })

    def _sample_rows(self, pl_module: LightningModule, datamodule, names: list[str], wandb) -> list[list]:
        images, labels = datamodule.splits["test"]
        images, labels = images[: self.num_samples], labels[: self.num_samples]
        batch = torch.stack([to_model_input(img, datamodule.eval_transform) for img in images])
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            probs = pl_module(batch.to(pl_module.device)).softmax(-1).cpu()
        pl_module.train(was_training)
        confidence, predicted = probs.max(-1)
        return [[wandb.Image(img), names[int(y)], names[int(p)], float(c), bool(p == y)]
                for img, y, p, c in zip(images, labels, predicted, confidence)]
