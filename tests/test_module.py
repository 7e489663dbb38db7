"""The LightningModule's loss options."""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from lightning import Trainer

from fer_lightning.data.datamodule import SyntheticFERDataModule
from fer_lightning.models.module import FERClassifier


def test_class_weighted_loss_uses_the_training_split_counts() -> None:
    transform = A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])
    dm = SyntheticFERDataModule(train_transform=transform, eval_transform=transform, num_train=140, num_val=14,
                                num_test=14, batch_size=16, num_workers=0)
    dm.setup()
    images, labels = dm.splits["train"]
    keep = (labels != 1) | (np.arange(len(labels)) % 5 == 0)  # disgust made 5x rarer
    dm.splits["train"] = (images[keep], labels[keep])
    model = FERClassifier("compact_cnn", optimizer=lambda params: torch.optim.SGD(params, lr=0.01),
                          class_weighted_loss=True)
    Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False).fit(model, datamodule=dm)
    torch.testing.assert_close(model.class_weights, dm.class_weights())
    assert model.class_weights[1] > 3 * model.class_weights[0]  # the rare class weighs more
