"""Exponential moving average (EMA) of the weights, validated, checkpointed and shipped instead of the raw weights.

Built on Lightning's `WeightAveraging`, which already (1) swaps the averaged weights in for every validation epoch
and back afterwards, so training continues on the raw weights, (2) writes the averaged weights to the
checkpoint's `state_dict` under the plain module keys (the raw ones go to `current_model_state`, for resuming),
and (3) leaves the averaged weights in the module when fitting ends. So `ModelCheckpoint` selects on PublicTest
exactly the weights it saves, and `FERClassifier.from_checkpoint` and ONNX export need no change.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor
from torch.optim.swa_utils import AveragedModel


def ema_multi_avg_fn(decay: float, warmup: bool = True) -> Any:
    """`AveragedModel`'s `multi_avg_fn`: EMA of floating-point tensors, plain copy of integer ones.

    Torch's `get_ema_multi_avg_fn` would lerp integer buffers too (batch norm's `num_batches_tracked`), which
    fails or truncates; copying keeps the counter true. Batch-norm running statistics are floating point and
    are averaged like the weights, as in timm's ModelEmaV2/V3, so they always match the averaged weights.

    `warmup`: the decay is min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's
    ExponentialMovingAverage with `num_updates`), so the early average is not dominated by the random init;
    with decay 0.999 it takes ~9000 steps to reach full decay.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        if not averaged:
            return
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        effective = decay
        if warmup:
            updates = float(num_averaged)
            effective = min(decay, (1.0 + updates) / (10.0 + updates))
        torch._foreach_lerp_(averaged, current, 1.0 - effective)

    return update


class EMA(WeightAveraging):
    """EMA of all parameters and buffers, updated after every optimizer step.

    Two changes to `WeightAveraging`, both for what happens after `fit`: the averaged copy is dropped when fitting
    ends, and a checkpoint loaded outside fitting is taken as it is. Without them, `trainer.validate/test(
    ckpt_path=best)` after training (what `train.py` does) would load the checkpoint's raw weights into the
    module and test those, or swap in the last epoch's average instead of the selected one.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, update_every_n_steps: int = 1) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=ema_multi_avg_fn(decay, warmup))
        if update_every_n_steps < 1:
            raise ValueError(f"update_every_n_steps must be >= 1, got {update_every_n_steps}")
        self.decay = decay
        self.warmup = warmup
        self.update_every_n_steps = update_every_n_steps

    @property
    def average_model(self) -> AveragedModel | None:
        """The averaged copy while fitting (None otherwise); its `.module` is a FERClassifier."""
        return self._average_model

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.update_every_n_steps == 0

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # After fit the module already holds the average (copied in `on_train_end`); later stages must evaluate
        # whatever checkpoint they load, not swap this copy in.
        if stage == "fit":
            self._average_model = None

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return  # validate/test/predict: the checkpoint's state_dict already holds the averaged weights
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
