"""The LightningModule's loss options and its grouped recipe settings."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from lightning import Trainer

from fer_lightning.assets import shipped_model_file
from fer_lightning.data.datamodule import SyntheticFERDataModule
from fer_lightning.models.module import FERClassifier, FinetuneSettings, LossSettings, MixingSettings


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

    milder = FERClassifier("compact_cnn", optimizer=lambda params: torch.optim.SGD(params, lr=0.01),
                           loss={"class_weighted": True, "class_weight_power": 0.5})
    Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False).fit(milder, datamodule=dm)
    torch.testing.assert_close(milder.class_weights, dm.class_weights().sqrt())
    with pytest.raises(ValueError, match="class_weight_power must be >= 0"):
        FERClassifier("compact_cnn", loss={"class_weighted": True, "class_weight_power": -1})


def test_recipe_settings_come_in_groups_and_unknown_fields_are_named() -> None:
    model = FERClassifier("compact_cnn", loss={"label_smoothing": 0.2}, finetune={"mode": "linear_probe"},
                          mixing={"mixup_alpha": 0.4}, speed={"channels_last": True})
    assert model.loss_settings == LossSettings(label_smoothing=0.2, class_weighted=False)
    assert model.finetune_settings.mode == "linear_probe" and model.mixing_settings.mixup_alpha == 0.4
    assert model.speed_settings.channels_last and not model.speed_settings.compile
    assert model.hparams.loss == {"label_smoothing": 0.2, "class_weighted": False,
                                  "class_weight_power": 1.0}  # plain dicts in checkpoints
    with pytest.raises(ValueError, match=r"model.mixing has no \['mixup'\]; its settings are"):
        FERClassifier("compact_cnn", mixing={"mixup": 0.4})
    with pytest.raises(ValueError, match="model.finetune.mode must be one of"):
        FERClassifier("compact_cnn", finetune={"mode": "partial"})
    with pytest.raises(TypeError, match=r"unexpected arguments \['label_smothing'\]"):
        FERClassifier("compact_cnn", label_smothing=0.1)


def test_checkpoints_from_before_the_grouping_still_load_with_their_recipe(tmp_path: Path) -> None:
    """Flat recipe hyperparameters (the shipped model's checkpoint has them) are folded into their groups."""
    legacy = FERClassifier("compact_cnn", label_smoothing=0.3, class_weighted_loss=True, finetune="staged",
                           unfreeze_at_epoch=2, mixup_alpha=0.2, mix_prob=0.5, compile=True)
    assert legacy.loss_settings == LossSettings(label_smoothing=0.3, class_weighted=True)
    assert legacy.finetune_settings == FinetuneSettings(mode="staged", unfreeze_at_epoch=2)
    assert legacy.mixing_settings == MixingSettings(mixup_alpha=0.2, prob=0.5)
    assert legacy.speed_settings.compile
    assert not {"label_smoothing", "mixup_alpha", "compile"} & set(legacy.hparams)  # saved grouped only

    # a checkpoint saved before the grouping (the model packaged until 2026-12-03 was one): flat keys only
    path = tmp_path / "legacy.ckpt"
    flat = {**{k: v for k, v in dict(legacy.hparams).items() if k not in ("loss", "finetune", "mixing", "speed")},
            "label_smoothing": 0.3, "class_weighted_loss": True, "compile": True}
    torch.save({"state_dict": legacy.state_dict(), "hyper_parameters": flat, "fer_lightning": {},
                "pytorch-lightning_version": "2.6.0"}, path)
    restored = FERClassifier.from_checkpoint(path)
    assert restored.loss_settings == LossSettings(label_smoothing=0.3, class_weighted=True)
    assert not restored.speed_settings.compile  # inference never compiles

    shipped = FERClassifier.from_checkpoint(shipped_model_file("ckpt"))  # written with the groups
    assert shipped.loss_settings.class_weighted and shipped.loss_settings.class_weight_power == 0.5
    assert shipped.finetune_settings.mode == "full" and not shipped.speed_settings.compile
