"""Learning-rate schedules that torch does not ship as one class, built like the others (`_partial_: true`)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(epoch: int, warmup_epochs: int, max_epochs: int, min_lr_ratio: float = 0.0) -> float:
    """The multiplier of the base learning rate for (0-based) `epoch`.

    Warmup ramps linearly over `warmup_epochs` epochs, (e + 1) / (warmup + 1), so no epoch trains at a zero
    learning rate and the ramp ends at the base rate on epoch `warmup_epochs`. Then a cosine from 1 down to
    `min_lr_ratio`, reached at `max_epochs` like `CosineAnnealingLR(T_max=max_epochs)`: with no warmup and
    `min_lr_ratio=0` the two give the same rates.
    """
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(1, max_epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LambdaLR):
    """A LambdaLR whose one factor applies to every parameter group, including groups added after construction.

    A plain LambdaLR keeps one lambda per group and silently leaves later groups alone; staged fine-tuning adds
    the backbone group mid-run (see `FinetuneSchedule`, which appends its base rate to `base_lrs`).
    """

    def __init__(self, optimizer: Optimizer, warmup_epochs: int, max_epochs: int, min_lr_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
        if warmup_epochs < 0 or max_epochs < 1:
            raise ValueError(f"need warmup_epochs >= 0 and max_epochs >= 1, got {warmup_epochs}, {max_epochs}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, epoch: int) -> float:
        return warmup_cosine_factor(epoch, self.warmup_epochs, self.max_epochs, self.min_lr_ratio)

    def get_lr(self) -> list[float]:
        return [base_lr * self.factor(self.last_epoch) for base_lr in self.base_lrs]


def cosine_with_warmup(optimizer: Optimizer, warmup_epochs: int = 3, max_epochs: int = 30,
                       min_lr_ratio: float = 0.0) -> WarmupCosineLR:
    """Linear warmup then cosine decay, stepped once per epoch (what `FERClassifier` asks Lightning to do).

    Warmup keeps the first updates of a freshly initialised network small while batch-norm statistics and
    momentum buffers settle, which lets the peak learning rate be higher (Goyal et al. 2017, "Accurate, Large
    Minibatch SGD"); the cosine then anneals to `min_lr_ratio` x the base rate at `max_epochs`.
    """
    return WarmupCosineLR(optimizer, warmup_epochs=warmup_epochs, max_epochs=max_epochs, min_lr_ratio=min_lr_ratio)
