"""Fine-tuning strategies for pretrained backbones: linear probe and staged freeze-then-unfreeze."""

from __future__ import annotations

from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

FINETUNE_MODES = ("full", "linear_probe", "staged")


class FinetuneSchedule(BaseFinetuning):
    """Freezes the backbone (linear probe: for good; staged: until `unfreeze_at_epoch`).

    Frozen batch-norm layers are kept in eval mode so a frozen backbone really is a fixed feature extractor
    (Lightning's default would normalise with each batch's statistics). On unfreezing, the backbone joins the
    optimizer at `backbone_lr_factor` times the head's learning rate, and LR schedulers learn about the new
    parameter group.
    """

    def __init__(self, mode: str, unfreeze_at_epoch: int = 1, backbone_lr_factor: float = 0.1) -> None:
        super().__init__()
        if mode not in ("linear_probe", "staged"):
            raise ValueError(f"FinetuneSchedule handles linear_probe and staged, not '{mode}'")
        self.mode = mode
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_factor = backbone_lr_factor
        self._frozen_bn: list[nn.Module] = []

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        modules = pl_module.backbone_modules()
        self.freeze(modules, train_bn=False)
        self._frozen_bn = [m for m in BaseFinetuning.flatten_modules(modules)
                           if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        for module in self._frozen_bn:
            module.eval()

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.mode != "staged" or epoch != self.unfreeze_at_epoch:
            return
        for module in self._frozen_bn:
            module.train()
        self._frozen_bn = []
        lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_factor
        self.unfreeze_and_add_param_group(pl_module.backbone_modules(), optimizer, lr=lr, train_bn=True)
        optimizer.param_groups[-1].setdefault("initial_lr", lr)
        for config in pl_module.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs.append(lr)
            if hasattr(scheduler, "min_lrs"):  # ReduceLROnPlateau keeps one floor per group
                scheduler.min_lrs.append(scheduler.min_lrs[-1])
