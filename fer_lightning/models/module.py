"""The one LightningModule: any network from `factory`, cross-entropy, and FER-aware metrics per stage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection

from fer_lightning.callbacks.ema import EMA
from fer_lightning.callbacks.finetuning import FINETUNE_MODES, FinetuneSchedule
from fer_lightning.callbacks.rng import RNGState
from fer_lightning.checkpoints import plain_net_kwargs
from fer_lightning.labels import EMOTIONS
from fer_lightning.metrics import metric_key, named_values, stage_metrics
from fer_lightning.models.distill import (
    DistillSettings,
    InputSpec,
    Teacher,
    combined_loss,
    distillation_loss,
)
from fer_lightning.models.factory import create_network
from fer_lightning.models.mixing import mix_batch

STAGES = ("train", "val", "test")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossSettings:
    """`model.loss`: cross-entropy with `label_smoothing`, optionally weighted by inverse class frequency.

    `class_weight_power` tempers the weighting: each class weighs (n / (k * n_c)) ** power, so 1 is the full
    'balanced' weighting and 0.5 its square root. Full weighting lifted CK+ disgust from 3% to 94% but cost
    FER2013 accuracy and CK+ angry (experiments/cross_dataset/README.md); the power sets the trade in between.
    """

    label_smoothing: float = 0.0
    class_weighted: bool = False
    class_weight_power: float = 1.0

    def __post_init__(self) -> None:
        if self.class_weight_power < 0:
            raise ValueError(f"model.loss.class_weight_power must be >= 0 (1 = balanced, 0.5 = its square root), "
                             f"got {self.class_weight_power}")


@dataclass(frozen=True)
class FinetuneSettings:
    """`model.finetune`: "full" (everything trains; backbone at `backbone_lr_factor` x lr), "linear_probe" (frozen
    backbone, only the classifier trains) or "staged" (frozen until `unfreeze_at_epoch`, then joins at
    `backbone_lr_factor` x lr)."""

    mode: str = "full"
    unfreeze_at_epoch: int = 1
    backbone_lr_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ValueError(f"model.finetune.mode must be one of {FINETUNE_MODES}, got '{self.mode}'")


@dataclass(frozen=True)
class MixingSettings:
    """`model.mixing`: Mixup/CutMix of training batches (see `mixing.py`); an alpha > 0 switches each on, `prob` is
    the share of batches mixed. Validation and test are never mixed; train metrics of a mixed batch count its
    dominant label."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or not 0.0 <= self.prob <= 1.0:
            raise ValueError("model.mixing.mixup_alpha and model.mixing.cutmix_alpha must be >= 0 and "
                             "model.mixing.prob in [0, 1]")


@dataclass(frozen=True)
class SpeedSettings:
    """`model.speed`: options for the training/evaluation loops only; the network's `state_dict` keys stay the same
    and `forward`, used for inference and export, never runs the compiled network."""

    channels_last: bool = False
    compile: bool = False


# Checkpoints written before the recipe settings were grouped hold them as flat hyperparameters.
LEGACY_FLAT_SETTINGS = {
    "label_smoothing": ("loss", "label_smoothing"), "class_weighted_loss": ("loss", "class_weighted"),
    "unfreeze_at_epoch": ("finetune", "unfreeze_at_epoch"), "backbone_lr_factor": ("finetune", "backbone_lr_factor"),
    "mixup_alpha": ("mixing", "mixup_alpha"), "cutmix_alpha": ("mixing", "cutmix_alpha"),
    "mix_prob": ("mixing", "prob"), "channels_last": ("speed", "channels_last"), "compile": ("speed", "compile"),
}

Settings = TypeVar("Settings", LossSettings, FinetuneSettings, MixingSettings, SpeedSettings, DistillSettings)


def settings(kind: type[Settings], value: Mapping[str, Any] | Settings | None, group: str) -> Settings:
    """One recipe group from its config mapping; an unknown field is an error naming it and the valid ones."""
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"model.{group} must be a mapping of {[f.name for f in fields(kind)]}, got {value!r}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"model.{group} has no {unknown}; its settings are {sorted(known)}")
    return kind(**dict(value))


def _fold_legacy_settings(groups: dict[str, dict[str, Any]], flat: dict[str, Any]) -> None:
    """Move a pre-grouping checkpoint's flat recipe hyperparameters into their groups (`groups` is updated)."""
    unknown = sorted(set(flat) - set(LEGACY_FLAT_SETTINGS))
    if unknown:
        raise TypeError(f"FERClassifier got unexpected arguments {unknown}")
    for key, value in flat.items():
        group, field = LEGACY_FLAT_SETTINGS[key]
        groups[group].setdefault(field, value)


def load_for_inference(path: Path) -> FERClassifier:
    """A FERClassifier from a checkpoint already checked by `read_checkpoint_meta`, on the CPU (teachers move to the
    batch's device when first used)."""
    return FERClassifier.from_checkpoint(path, map_location="cpu")


class FERClassifier(LightningModule):
    """Trains and evaluates an emotion classifier; its checkpoint rebuilds the network and its preprocessing.

    The network is built here from its name (not passed in as a module) so that a checkpoint alone is
    enough to restore it: `FERClassifier.from_checkpoint(path)` needs no config.
    """

    def __init__(
        self,
        backbone: str,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        drop_rate: float = 0.0,
        in_chans: int = 1,
        num_classes: int = len(EMOTIONS),
        class_names: Sequence[str] = EMOTIONS,
        input_size: int = 48,
        input_mean: float = 0.5,
        input_std: float = 0.25,
        gray_input: str = "sum",
        net_kwargs: Mapping[str, Any] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/loss",
        loss: Mapping[str, Any] | None = None,
        finetune: Mapping[str, Any] | None = None,
        mixing: Mapping[str, Any] | None = None,
        ema_decay: float = 0.0,
        speed: Mapping[str, Any] | None = None,
        distill: Mapping[str, Any] | None = None,
        **legacy_flat_settings: Any,
    ) -> None:
        """Three blocks. The network and its input (`backbone` ... `net_kwargs`): what a checkpoint rebuilds and
        what resuming checks, flat because every tool reads them; `net_kwargs` are the network's own arguments (e.g.
        CompactCNN's `widths`), so a wider or deeper variant needs no new class. The optimisation (`optimizer`,
        `scheduler`, `scheduler_monitor`). The training recipe, one group per concern, each a mapping of the fields
        of `LossSettings`, `FinetuneSettings`, `MixingSettings`, `SpeedSettings` and `DistillSettings` (missing
        fields keep their defaults), plus `ema_decay` (0 = off: validate, checkpoint and ship an EMA of the
        weights). The distillation teachers are loaded only when fitting starts (`setup`), so loading a distilled
        student's checkpoint never needs their files.

        `gray_input`: "sum" (timm in_chans=1: RGB filters summed; default, as exact and 3x cheaper in the first
        conv) or "repeat" (a 3-channel network fed the gray image three times).
        `legacy_flat_settings`: the flat recipe keys of checkpoints written before the grouping (`label_smoothing`,
        `mixup_alpha`, ...; `finetune` was the mode string), so those checkpoints still load."""
        super().__init__()
        if isinstance(finetune, str):  # a pre-grouping checkpoint's finetune mode
            finetune = {"mode": finetune}
        if legacy_flat_settings:
            groups = {name: dict(group or {}) for name, group in
                      (("loss", loss), ("finetune", finetune), ("mixing", mixing), ("speed", speed))}
            _fold_legacy_settings(groups, legacy_flat_settings)
            loss, finetune, mixing, speed = groups["loss"], groups["finetune"], groups["mixing"], groups["speed"]
            legacy_flat_settings.clear()  # folded in: the saved hyperparameters hold the groups only
        loss_settings = settings(LossSettings, loss, "loss")
        finetune_settings = settings(FinetuneSettings, finetune, "finetune")
        mixing_settings = settings(MixingSettings, mixing, "mixing")
        speed_settings = settings(SpeedSettings, speed, "speed")
        distill_settings = settings(DistillSettings, distill, "distill")
        # Stored as plain dicts: what save_hyperparameters writes must load with torch.load(weights_only=True).
        loss, finetune = asdict(loss_settings), asdict(finetune_settings)
        mixing, speed = asdict(mixing_settings), asdict(speed_settings)
        distill = distill_settings.as_hparams()
        net_kwargs = plain_net_kwargs(net_kwargs)
        if len(class_names) != num_classes:
            raise ValueError(f"model.class_names has {len(class_names)} names for num_classes={num_classes}")
        if gray_input not in ("sum", "repeat"):
            raise ValueError(f"model.gray_input must be 'sum' or 'repeat', got '{gray_input}'")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1) (0 = off), got {ema_decay}")
        _check_plateau_monitor(scheduler, scheduler_monitor)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.loss_settings, self.finetune_settings = loss_settings, finetune_settings
        self.mixing_settings, self.speed_settings = mixing_settings, speed_settings
        self.distill_settings = distill_settings
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = tuple(class_names)
        net_in_chans = 3 if gray_input == "repeat" else in_chans
        self.net = create_network(backbone, num_classes=num_classes, in_chans=net_in_chans, pretrained=pretrained,
                                  drop_rate=drop_rate, input_size=input_size, pretrained_file=pretrained_file,
                                  net_kwargs=net_kwargs)
        self.register_buffer("class_weights", torch.ones(num_classes))
        self.train_metrics = stage_metrics(num_classes)
        self.val_metrics = stage_metrics(num_classes)
        self.test_metrics = stage_metrics(num_classes)
        self.val_acc_best = MaxMetric()
        self.train_loss_mean, self.val_loss_mean, self.test_loss_mean = MeanMetric(), MeanMetric(), MeanMetric()
        # The two terms of a distilled training loss (no state_dict entries: torchmetrics states are not persistent).
        self.distill_loss_means = (nn.ModuleDict({"ce": MeanMetric(), "distill": MeanMetric()})
                                   if distill_settings.enabled else None)
        # Last epoch's confusion matrix per stage, for callbacks and metrics.json (rows: true, cols: predicted).
        self.confusion_matrices: dict[str, np.ndarray] = {}
        self.example_input_array = torch.zeros(2, in_chans, input_size, input_size)
        self._compiled_net: Callable[[torch.Tensor], torch.Tensor] | None = None  # built on first use, see _loop_net
        self.attach_teacher(None)  # loaded by setup("fit") when model.distill.teachers names any

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> FERClassifier:
        """Inference-ready model from a checkpoint alone (no config, no weight download, never compiled)."""
        model = cls.load_from_checkpoint(path, map_location=map_location, pretrained=False, pretrained_file=None)
        model.speed_settings = replace(model.speed_settings, compile=False)
        model.hparams.speed = asdict(model.speed_settings)
        return model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Plain eager network: what inference, export and the model summary call."""
        return self.net(self._network_input(x))

    def _network_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if self.hparams.gray_input == "repeat" else x

    def _loop_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The forward of the Trainer's loops, where the speed options apply."""
        x = self._network_input(x)
        if self.speed_settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._loop_net()(x)

    def _loop_net(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if not self.speed_settings.compile:
            return self.net
        if getattr(self, "_compiled_net", None) is None:
            # Held outside the registered submodules (object.__setattr__ skips nn.Module's registration), so
            # the state_dict keeps the plain `net.*` keys; built lazily, after any EMA callback copied the module.
            object.__setattr__(self, "_compiled_net", torch.compile(self.net))
        return self._compiled_net

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_compiled_net", None)  # copies and pickles (EMA's deepcopy, spawn) recompile on their own
        state.pop("_teacher", None)  # and reload their teachers in setup: an EMA copy needs none
        return state

    @property
    def teacher(self) -> Teacher | None:
        """The frozen distillation teachers while fitting with `model.distill.teachers`, else None."""
        return self.__dict__.get("_teacher")

    def attach_teacher(self, teacher: Teacher | None) -> None:
        """Distil from `teacher` (or stop: None). Held outside the registered submodules (object.__setattr__ skips
        nn.Module's registration), so no teacher weight enters the state_dict, the optimizer or the model summary,
        and Lightning's train()/eval() switches leave it in eval mode."""
        object.__setattr__(self, "_teacher", teacher)

    def head_module(self) -> nn.Module:
        return self.net.get_classifier()

    def backbone_modules(self) -> list[nn.Module]:
        """The largest submodules of the network that hold no classifier parameter (what fine-tuning freezes)."""
        head = set(self.head_module().modules())

        def outside_head(module: nn.Module) -> list[nn.Module]:
            found = []
            for child in module.children():
                if child in head:
                    continue
                found += outside_head(child) if head & set(child.modules()) else [child]
            return found

        return outside_head(self.net)

    def configure_callbacks(self) -> list[Callback]:
        callbacks: list[Callback] = []
        if self.finetune_settings.mode != "full":
            callbacks.append(FinetuneSchedule(self.finetune_settings.mode, self.finetune_settings.unfreeze_at_epoch,
                                              self.finetune_settings.backbone_lr_factor))
        if self.hparams.ema_decay > 0:
            callbacks.append(EMA(decay=self.hparams.ema_decay))
        callbacks.append(RNGState())  # every run can be resumed exactly, whatever `callbacks` config it uses
        return callbacks

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule  # Lightning calls setup only with a trainer attached
        if stage == "fit" and self.loss_settings.class_weighted and datamodule is not None:
            self.class_weights.copy_(datamodule.class_weights() ** self.loss_settings.class_weight_power)
        if self.speed_settings.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if stage == "fit" and self.distill_settings.enabled and self.teacher is None:
            # Every fit loads the teachers from the run's paths, a resumed one included (a checkpoint holds none).
            self.attach_teacher(Teacher.from_checkpoints(
                self.distill_settings.teachers, self.class_names, InputSpec.of(self),
                self.distill_settings.temperature, channels_last=self.speed_settings.channels_last,
                load_model=load_for_inference))

    def _metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, y,
            weight=self.class_weights if self.loss_settings.class_weighted else None,
            label_smoothing=self.loss_settings.label_smoothing,
        )

    def _log_loss(self, loss: torch.Tensor, stage: str, batch_size: int) -> None:
        # The epoch mean is a torchmetrics mean weighted by batch size, synced across DDP processes in the epoch-end
        # hooks that every process runs. (A `sync_dist` log is reduced lazily when rank 0's progress bar reads it,
        # which deadlocks, and it averages per-process means instead of all faces.)
        getattr(self, f"{stage}_loss_mean").update(loss.detach(), batch_size)
        if stage == "train":
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self._loop_forward(x)
        loss = self._loss(logits, y)
        self._metrics(stage).update(logits.detach(), y)
        self._log_loss(loss, stage, len(y))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        mixing = self.mixing_settings
        mixed = mix_batch(x, y, mixing.mixup_alpha, mixing.cutmix_alpha, mixing.prob)
        teacher = self.teacher
        if mixed is None and teacher is None:
            loss = self._shared_step(batch, "train")
        else:
            inputs = x if mixed is None else mixed.x
            logits = self._loop_forward(inputs)
            if mixed is None:
                loss = self._loss(logits, y)
            else:
                loss = mixed.lam * self._loss(logits, mixed.y_a) + (1.0 - mixed.lam) * self._loss(logits, mixed.y_b)
            if teacher is not None:  # the teachers score the very images the student saw, mixed ones included
                loss = self._distilled_loss(loss, logits, teacher(inputs), len(y))
            # A mixed batch counts against its dominant label, so train/acc stays defined when every batch is
            # mixed; it reads lower than clean accuracy and is comparable only between runs with the same mixing.
            self._metrics("train").update(logits.detach(), y if mixed is None else mixed.dominant)
            self._log_loss(loss, "train", len(y))
        regularization = getattr(self.net, "regularization_loss", None)
        return loss + regularization() if regularization is not None else loss

    def _distilled_loss(self, hard_loss: torch.Tensor, logits: torch.Tensor, teacher_probs: torch.Tensor,
                        batch_size: int) -> torch.Tensor:
        settings = self.distill_settings
        soft_loss = distillation_loss(logits, teacher_probs, settings.temperature)
        if self.distill_loss_means is not None:
            self.distill_loss_means["ce"].update(hard_loss.detach(), batch_size)
            self.distill_loss_means["distill"].update(soft_loss.detach(), batch_size)
        return combined_loss(hard_loss, soft_loss, settings.weight)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def _log_epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        values = self._metrics(stage).compute()
        self._metrics(stage).reset()
        logged = named_values(values, self.class_names, stage)
        loss_mean = getattr(self, f"{stage}_loss_mean")
        if loss_mean.update_called:
            self.log("train/loss_epoch" if stage == "train" else f"{stage}/loss", loss_mean.compute(),
                     prog_bar=stage != "train")
        loss_mean.reset()
        accuracy_key = metric_key(stage, "acc")
        self.log_dict({k: v for k, v in logged.items() if k != accuracy_key})
        self.log(accuracy_key, values["acc"], prog_bar=True)
        self.confusion_matrices[stage] = values["confusion"].cpu().numpy()
        return logged

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")
        for term, mean in (self.distill_loss_means or {}).items():  # a distilled loss: its two terms
            if mean.update_called:
                self.log(f"train/loss_{term}", mean.compute())
            mean.reset()

    def on_validation_epoch_end(self) -> None:
        logged = self._log_epoch_metrics("val")
        if self.trainer.sanity_checking:
            return  # validation of the untrained (or just restored) model never counts towards the best score
        self.val_acc_best.update(logged["val/acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer configured (model.optimizer); a loaded checkpoint can only predict")
        head_ids = {id(p) for p in self.head_module().parameters()}
        head = [p for p in self.net.parameters() if id(p) in head_ids]
        backbone = [p for p in self.net.parameters() if id(p) not in head_ids and p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": head, "name": "head"}]
        if backbone:  # frozen (linear probe / staged) backbones join later or never
            lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
            factor = self.finetune_settings.backbone_lr_factor
            groups.append({"params": backbone, "name": "backbone", **({"lr": lr * factor} if lr else {})})
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor,
                             "interval": "epoch", "frequency": 1},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the exact evaluation preprocessing and data description, so inference can match training."""
        datamodule = self.trainer.datamodule
        extra: dict[str, Any] = {"class_names": list(self.class_names)}
        # What resuming needs beyond Lightning's own state: the best PublicTest accuracy so far (torchmetrics
        # states are not in the state_dict) and the W&B run to continue.
        if self.val_acc_best.update_called:
            extra["val_acc_best"] = float(self.val_acc_best.compute())
        wandb_ids = [logger.version for logger in self.trainer.loggers if isinstance(logger, WandbLogger)]
        if wandb_ids and wandb_ids[0]:
            extra["wandb_run_id"] = str(wandb_ids[0])
        if datamodule is not None:
            import albumentations as A

            extra["eval_transform"] = A.to_dict(datamodule.eval_transform)
            extra["data"] = datamodule.describe()
        checkpoint["fer_lightning"] = extra

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = checkpoint.get("fer_lightning", {}).get("val_acc_best")
        self.val_acc_best.reset()
        if best is not None:
            self.val_acc_best.update(torch.tensor(best))
        saved = (checkpoint.get("hyper_parameters") or {}).get("distill")
        if saved and saved.get("teachers") and dict(saved) != self.hparams.get("distill"):
            # The command's preflight refuses such a resume (check_resumed_distill); train(cfg) called from
            # Python gets this warning, since the run's own settings apply, as for every other setting.
            log.warning("The checkpoint was trained with model.distill=%s; this run uses %s",
                        dict(saved), self.hparams.get("distill"))


def _check_plateau_monitor(scheduler: Callable[..., Any] | None, monitor: str) -> None:
    """ReduceLROnPlateau must watch a loss with mode=min and an accuracy/F1 with mode=max: refuse the mix-up."""
    target = getattr(scheduler, "func", scheduler)
    if not (isinstance(target, type) and issubclass(target, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        return
    mode = getattr(scheduler, "keywords", {}).get("mode", "min")
    expected = "min" if "loss" in monitor else "max"
    if mode != expected:
        raise ValueError(f"model.scheduler is ReduceLROnPlateau with mode={mode} but model.scheduler_monitor is "
                         f"'{monitor}', which wants mode={expected}")
