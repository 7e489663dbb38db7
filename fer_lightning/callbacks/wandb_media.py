"""W&B extras beyond scalars: the test confusion matrix, a per-class table, and sample predictions with images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from fer_lightning.data.dataset import to_model_input
from fer_lightning.plots import confusion_matrix_figure

# Faces of a class predicted to choose its samples from: enough to find right and wrong ones, cheap on a CPU.
CANDIDATES_PER_SAMPLE = 8
# `test/samples` columns after the image; `file` is the PNG's path in the run folder.
SAMPLE_COLUMNS = ("true", "predicted", "confidence", "correct", "index", "file")


def pick_samples(labels: np.ndarray, predicted: np.ndarray, per_class: int) -> np.ndarray:
    """Positions in `labels` (candidates already in a seeded random order, every class in it) to show.

    Up to `per_class` faces per class, half of them (rounded down) misclassified when the model gets some of that
    class wrong, so the table shows what the model confuses beside what it gets right; a class short of one kind
    is filled with the other. Classes come in label order, each class's faces in candidate order.
    """
    chosen: list[int] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        right, wrong = members[predicted[members] == cls], members[predicted[members] != cls]
        n_wrong = min(len(wrong), per_class // 2)
        n_right = min(len(right), per_class - n_wrong)
        n_wrong = min(len(wrong), per_class - n_right)
        chosen += sorted([*right[:n_right], *wrong[:n_wrong]])
    return np.asarray(chosen, dtype=np.int64)


class WandbConfusionMatrix(Callback):
    """On test end, sends to every W&B logger: `test/confusion_matrix` (image), `test/per_class` (table),
    `test/samples` (a table of test faces with true and predicted emotion and confidence) and `test/sample_faces`
    (the same faces as captioned images).

    The samples are drawn per class from a seeded shuffle of the test split: sources list faces class by class, so
    the first faces would all be one emotion. The same `seed` offers the same candidate faces in every run, so runs
    can be compared face by face.

    Where the faces live: W&B keeps a table's contents (images included) as an artifact staged outside the run
    folder (`$WANDB_DATA_DIR/artifacts/staging`), which an offline run copied to another machine cannot upload
    (wandb/wandb#3098). So the PNGs are also written to `<run dir>/samples/` (the table's `file` column names them)
    and logged as `test/sample_faces`, which W&B stores in the run's own `wandb/*/files/media/`: a copied run
    folder keeps and syncs them.
    """

    def __init__(self, per_class: int = 4, seed: int = 0) -> None:
        if per_class < 1:
            raise ValueError(f"callbacks.wandb_confusion_matrix.per_class must be >= 1, got {per_class}")
        self.per_class = per_class
        self.seed = seed

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = getattr(pl_module, "confusion_matrices", {}).get("test")
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if matrix is None or not loggers or trainer.global_rank != 0:
            return
        import wandb

        names = list(pl_module.class_names)
        datamodule = trainer.datamodule
        fig = confusion_matrix_figure(matrix, names, f"test confusion matrix ({datamodule.name})")
        # A class with no scored face (a cut-down evaluation) has no accuracy: None, shown empty, not 0.
        per_class = [[name, int(matrix[i].sum()), float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None]
                     for i, name in enumerate(names)]
        samples = self.write_samples(pl_module, datamodule, names, Path(trainer.default_root_dir) / "samples")
        table = wandb.Table(columns=["face", *SAMPLE_COLUMNS], data=[
            [wandb.Image(str(sample["path"]), caption=sample["caption"]), *(sample[c] for c in SAMPLE_COLUMNS)]
            for sample in samples])
        faces = [wandb.Image(str(sample["path"]), caption=sample["caption"]) for sample in samples]
        for logger in loggers:
            logger.experiment.log({
                "test/confusion_matrix": wandb.Image(fig),
                "test/per_class": wandb.Table(columns=["class", "support", "accuracy"], data=per_class),
                "test/samples": table,
                "test/sample_faces": faces,
            })

    def write_samples(self, pl_module: LightningModule, datamodule: Any, names: list[str],
                      folder: Path) -> list[dict[str, Any]]:
        """Predict a seeded pool of test faces, pick the samples (`pick_samples`), write them as PNGs to `folder`."""
        images, labels = datamodule.splits["test"]
        labels = np.asarray(labels)
        shuffled = np.random.default_rng(self.seed).permutation(len(labels))
        pool = self.per_class * CANDIDATES_PER_SAMPLE
        candidates = np.concatenate([shuffled[labels[shuffled] == cls][:pool] for cls in np.unique(labels)])
        confidence, predicted = self._predict(pl_module, datamodule, images[candidates]).max(-1)
        folder.mkdir(parents=True, exist_ok=True)
        samples = []
        for row, i in enumerate(pick_samples(labels[candidates], predicted.numpy(), self.per_class)):
            index, true, guess = int(candidates[i]), names[int(labels[candidates[i]])], names[int(predicted[i])]
            path = folder / f"{row:02d}_{true}_as_{guess}_{index}.png"
            if not cv2.imwrite(str(path), images[index]):
                raise OSError(f"could not write {path}")
            samples.append({"path": path, "file": f"samples/{path.name}", "true": true, "predicted": guess,
                            "confidence": float(confidence[i]), "correct": true == guess, "index": index,
                            "caption": f"{true} -> {guess} ({float(confidence[i]):.2f})"})
        return samples

    @staticmethod
    def _predict(pl_module: LightningModule, datamodule: Any, images: np.ndarray) -> torch.Tensor:
        batch = torch.stack([to_model_input(img, datamodule.eval_transform) for img in images])
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            probs = torch.cat([pl_module(chunk.to(pl_module.device)).softmax(-1).cpu() for chunk in batch.split(256)])
        pl_module.train(was_training)
        return probs
