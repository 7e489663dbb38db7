"""Training-recipe switches: crops, erasing, Mixup/CutMix, EMA, optimizer/scheduler groups, VGG-FER, speed flags."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_train_cfg
from hydra.utils import instantiate
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

import fer_lightning.models.module as module_mod
from fer_lightning.callbacks.ema import EMA
from fer_lightning.data.datamodule import SyntheticFERDataModule
from fer_lightning.models.factory import create_network
from fer_lightning.models.mixing import cutmix, mix_batch, mixup
from fer_lightning.models.module import FERClassifier
from fer_lightning.models.schedulers import WarmupCosineLR, cosine_with_warmup, warmup_cosine_factor
from fer_lightning.train import train

NORMALIZE = A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])
SMALL_SYNTHETIC = ["data=synthetic", "data.num_train=56", "data.num_val=28", "data.num_test=28",
                   "data.batch_size=8", "data.eval_batch_size=8"]


def _faces(count: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(count)]


def _cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    return compose_train_cfg(tmp_path, overrides)


def _datamodule(num_train: int = 48, batch_size: int = 8, seed: int = 0) -> SyntheticFERDataModule:
    return SyntheticFERDataModule(train_transform=NORMALIZE, eval_transform=NORMALIZE, num_train=num_train,
                                  num_val=16, num_test=16, batch_size=batch_size, num_workers=0, seed=seed)


def _trainer(tmp_path: Path | None = None, **kwargs: Any) -> Trainer:
    defaults: dict[str, Any] = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                                "enable_model_summary": False, "num_sanity_val_steps": 0}
    if tmp_path is None:
        defaults["enable_checkpointing"] = False
    else:
        defaults["default_root_dir"] = str(tmp_path)
    return Trainer(**{**defaults, **kwargs})


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


# --- Random crop and random erasing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "crop", "expected_size"), [("compact_cnn", 44, 44), ("compact_cnn", 40, 40),
                                                             ("timm", 44, 48), ("vgg_fer", 44, 44)])
def test_random_crop_train_output_is_the_model_input(tmp_path: Path, model: str, crop: int,
                                                     expected_size: int) -> None:
    """Scratch nets take the crop at its own size (model.input_size follows crop_size); timm nets resize it."""
    cfg = _cfg(tmp_path, [f"model={model}", f"transforms.crop_size={crop}"])
    assert cfg.model.input_size == expected_size
    train_tf, eval_tf = instantiate(cfg.transforms.train), instantiate(cfg.transforms.eval)
    crops = [t for t in train_tf.transforms if isinstance(t, A.RandomCrop)]
    assert len(crops) == 1 and (crops[0].height, crops[0].width) == (crop, crop)
    for face in _faces():
        assert train_tf(image=face)["image"].shape == (expected_size, expected_size)
        assert eval_tf(image=face)["image"].shape == (expected_size, expected_size)


def test_eval_center_crop_is_deterministic_and_centred(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, ["model=compact_cnn", "transforms.crop_size=44"])
    eval_tf = instantiate(cfg.transforms.eval)
    assert isinstance(eval_tf.transforms[0], A.CenterCrop) and eval_tf.transforms[0].height == 44
    for face in _faces():
        first, second = eval_tf(image=face)["image"], eval_tf(image=face)["image"]
        np.testing.assert_array_equal(first, second)
        expected = (face[2:46, 2:46].astype(np.float32) / 255.0 - 0.5) / 0.25
        np.testing.assert_allclose(first, expected, atol=1e-6)


def test_crop_size_48_leaves_evaluation_as_before(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, ["model=compact_cnn"])
    assert cfg.transforms.crop_size == 48 and cfg.transforms.erasing_p == 0.0 and cfg.model.input_size == 48
    before = A.Compose([A.Resize(height=48, width=48), A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])
    eval_tf = instantiate(cfg.transforms.eval)
    for face in _faces(8):
        np.testing.assert_array_equal(eval_tf(image=face)["image"], before(image=face)["image"])


def test_random_erasing_is_a_switch(tmp_path: Path) -> None:
    off = instantiate(_cfg(tmp_path, ["transforms.erasing_p=0.0"]).transforms.train)
    on = instantiate(_cfg(tmp_path, ["transforms.erasing_p=1.0"]).transforms.train)
    (erase_off,), (erase_on,) = ([t for t in tf.transforms if isinstance(t, A.Erasing)] for tf in (off, on))
    assert erase_off.p == 0.0 and erase_on.p == 1.0
    face = np.full((48, 48), 128, dtype=np.uint8)
    erased = A.Compose([erase_on], seed=0)(image=face)["image"]
    assert erased.shape == face.shape and 0.02 * 48 * 48 <= (erased != face).sum() <= 0.34 * 48 * 48


# --- Mixup / CutMix ---------------------------------------------------------------------------------------------


def test_mixup_blends_images_with_lam_in_the_open_interval() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 48, 48), torch.arange(8) % 7
    perm = torch.randperm(8)
    mixed = mixup(x, y, 0.3, perm)
    torch.testing.assert_close(mixed.x, 0.3 * x + 0.7 * x[perm])
    assert mixed.y_b.tolist() == y[perm].tolist() and mixed.dominant is mixed.y_b
    for seed in range(20):
        torch.manual_seed(seed)
        batch = mix_batch(x, y, mixup_alpha=0.4)
        assert batch is not None and batch.mode == "mixup" and 0.0 < batch.lam < 1.0


def test_cutmix_box_area_matches_lam() -> None:
    x, y = torch.zeros(6, 1, 48, 48), torch.arange(6)
    x += torch.arange(6).view(6, 1, 1, 1)  # image i is filled with the value i
    for seed in range(20):
        torch.manual_seed(seed)
        perm = torch.roll(torch.arange(6), 1)  # never an image with itself
        mixed = cutmix(x, y, 0.6, perm)
        top, bottom, left, right = mixed.box
        pasted = (mixed.x != x).all(dim=0)[0]  # pixels that now come from another image
        assert pasted.sum().item() == (bottom - top) * (right - left)
        assert pasted[top:bottom, left:right].all()
        assert math.isclose(mixed.lam, 1.0 - pasted.float().mean().item(), abs_tol=1e-6)
        assert 0.0 < mixed.lam <= 1.0


def test_mix_batch_switches_and_respects_mix_prob() -> None:
    x, y = torch.randn(4, 1, 48, 48), torch.arange(4)
    assert mix_batch(x, y) is None  # both alphas 0: off
    torch.manual_seed(0)
    modes = {mix_batch(x, y, mixup_alpha=0.4, cutmix_alpha=1.0).mode for _ in range(40)}
    assert modes == {"mixup", "cutmix"}
    assert all(mix_batch(x, y, mixup_alpha=0.4, mix_prob=0.0) is None for _ in range(10))
    with pytest.raises(ValueError):
        mix_batch(x, y, mixup_alpha=-1.0)


@pytest.mark.parametrize("alphas", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}])
def test_mixed_training_loss_is_the_lam_weighted_smoothed_loss(alphas: dict[str, float]) -> None:
    torch.manual_seed(0)
    plain = FERClassifier("compact_cnn", label_smoothing=0.1, drop_rate=0.0)
    mixing = FERClassifier("compact_cnn", label_smoothing=0.1, drop_rate=0.0, **alphas)
    mixing.load_state_dict(plain.state_dict())
    for model in (plain, mixing):
        model.log = lambda *args, **kwargs: None  # no trainer attached
    x, y = torch.randn(8, 1, 48, 48), torch.arange(8) % 7
    loss_plain = plain.training_step((x, y), 0)
    torch.manual_seed(1)
    loss_mixed = mixing.training_step((x, y), 0)
    torch.manual_seed(1)
    batch = mix_batch(x, y, **alphas)
    logits = plain(batch.x)
    expected = (batch.lam * F.cross_entropy(logits, batch.y_a, label_smoothing=0.1)
                + (1 - batch.lam) * F.cross_entropy(logits, batch.y_b, label_smoothing=0.1))
    assert 0.0 < batch.lam < 1.0
    torch.testing.assert_close(loss_mixed, expected)
    assert not torch.isclose(loss_mixed, loss_plain)


def test_mixing_runs_in_training_only(monkeypatch: pytest.MonkeyPatch) -> None:
    stages: list[str] = []
    real_mix = module_mod.mix_batch

    def recording_mix(*args: Any, **kwargs: Any) -> Any:
        stages.append(model.trainer.state.stage.value)
        return real_mix(*args, **kwargs)

    monkeypatch.setattr(module_mod, "mix_batch", recording_mix)
    model = FERClassifier("compact_cnn", optimizer=_sgd, mixup_alpha=0.4, cutmix_alpha=1.0)
    dm = _datamodule()
    trainer = _trainer(fast_dev_run=True)
    trainer.fit(model, datamodule=dm)
    assert "train/acc" in trainer.callback_metrics  # metrics of the mixed batch, against its dominant label
    trainer.test(model, datamodule=dm)
    assert stages == ["train"]  # one training batch mixed; the validation and test batches never


# --- EMA ----------------------------------------------------------------------------------------------------------


class _RecordWeights(Callback):
    """Raw weights after every optimizer step and before every training batch (trainer callbacks run before the
    model's EMA callback), and the weights the validation batches see."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.after_step: list[dict[str, torch.Tensor]] = []
        self.before_batch: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    def _take(self, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        state = pl_module.state_dict()
        return {name: state[name].detach().clone() for name in self.names}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.before_batch.append(self._take(pl_module))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.after_step.append(self._take(pl_module))

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            self.validated.append(self._take(pl_module))


WATCHED = ("net.head.3.weight", "net.features.1.running_mean", "net.features.1.num_batches_tracked")


def _manual_ema(raw: list[torch.Tensor], decay: float) -> torch.Tensor:
    """TensorFlow-style EMA with warmup: the first update copies, the n-th decays by min(d, (1+n)/(10+n))."""
    ema = raw[0].clone()
    for n, value in enumerate(raw[1:], start=1):
        ema = torch.lerp(ema, value, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))
    return ema


@pytest.fixture(scope="module", params=["model_option", "trainer_callback"])
def ema_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A short fit with EMA (decay 0.9): 2 epochs x 4 steps, validation and a checkpoint after each epoch.

    EMA comes either from `model.ema_decay` (a fresh callback for every trainer call) or as one callback instance
    given to the Trainer, which then outlives `fit` into the `validate`/`test` calls.
    """
    tmp_path = tmp_path_factory.mktemp("ema")
    torch.manual_seed(0)
    by_model = request.param == "model_option"
    model = FERClassifier("compact_cnn", optimizer=_sgd, ema_decay=0.9 if by_model else 0.0)
    recorder = _RecordWeights(WATCHED)
    # the last epoch's checkpoint, as conf/callbacks/default.yaml's last_checkpoint writes it (Lightning's save_last
    # skips epochs that do not improve the monitored metric)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last", enable_version_counter=False)
    dm = _datamodule(num_train=32)
    callbacks = [recorder, checkpoint] + ([] if by_model else [EMA(decay=0.9)])
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    return {"model": model, "recorder": recorder, "trainer": trainer, "dm": dm,
            "last": Path(checkpoint.best_model_path), "fit_val_loss": float(trainer.callback_metrics["val/loss"])}


def test_ema_weights_follow_the_expected_average(ema_run: dict[str, Any]) -> None:
    model, recorder = ema_run["model"], ema_run["recorder"]
    assert len(recorder.after_step) == 8
    final = model.state_dict()  # after fit the module holds the average
    for name in WATCHED[:2]:
        raw = [step[name] for step in recorder.after_step]
        torch.testing.assert_close(final[name], _manual_ema(raw, 0.9))
        assert not torch.allclose(final[name], raw[-1])  # the average is not the raw weights
    # Integer buffers are copied, not averaged.
    assert final[WATCHED[2]] == recorder.after_step[-1][WATCHED[2]]


def test_training_continues_on_raw_weights_and_validation_sees_the_average(ema_run: dict[str, Any]) -> None:
    recorder = ema_run["recorder"]
    name = WATCHED[0]
    # First batch of epoch 2 starts from the raw weights of the last step of epoch 1, not from the average.
    torch.testing.assert_close(recorder.before_batch[4][name], recorder.after_step[3][name])
    # The first validation saw the average of the first 4 raw steps.
    ema_after_epoch_1 = _manual_ema([step[name] for step in recorder.after_step[:4]], 0.9)
    torch.testing.assert_close(recorder.validated[0][name], ema_after_epoch_1)
    assert not torch.allclose(recorder.validated[0][name], recorder.after_step[3][name])


def test_checkpoint_holds_the_average_under_plain_keys(ema_run: dict[str, Any]) -> None:
    model, recorder, last = ema_run["model"], ema_run["recorder"], ema_run["last"]
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    plain_keys = set(FERClassifier("compact_cnn").state_dict())
    assert "n_averaged" not in checkpoint["state_dict"] and "n_averaged" in checkpoint["averaging_state"]
    assert set(checkpoint["state_dict"]) == plain_keys
    for name, value in model.state_dict().items():
        torch.testing.assert_close(checkpoint["state_dict"][name], value)
    # The raw weights travel along for resuming, under their own key.
    torch.testing.assert_close(checkpoint["current_model_state"][WATCHED[0]], recorder.after_step[-1][WATCHED[0]])
    loaded = FERClassifier.from_checkpoint(last)
    torch.testing.assert_close(loaded.state_dict()[WATCHED[0]], model.state_dict()[WATCHED[0]])


def test_validating_the_checkpoint_reproduces_the_validation_logged_during_fit(ema_run: dict[str, Any]) -> None:
    """What train.py does after fit: validate and test the selected checkpoint. Both must use its averaged weights."""
    trainer, dm, last = ema_run["trainer"], ema_run["dm"], ema_run["last"]
    model = ema_run["model"]
    val = trainer.validate(model, datamodule=dm, ckpt_path=str(last), verbose=False)[0]
    assert math.isclose(val["val/loss"], ema_run["fit_val_loss"], rel_tol=1e-5)
    test = trainer.test(model, datamodule=dm, ckpt_path=str(last), verbose=False)[0]
    reference = FERClassifier.from_checkpoint(last)
    expected = _trainer().test(reference, datamodule=dm, verbose=False)[0]
    assert math.isclose(test["test/loss"], expected["test/loss"], rel_tol=1e-5)
    # The raw weights would have scored differently.
    raw = FERClassifier("compact_cnn")
    raw.load_state_dict(torch.load(last, map_location="cpu", weights_only=False)["current_model_state"])
    raw_val = _trainer().validate(raw, datamodule=dm, verbose=False)[0]
    assert not math.isclose(raw_val["val/loss"], ema_run["fit_val_loss"], rel_tol=1e-5)


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")  # resuming into the same dir
def test_resuming_restores_raw_weights_for_training_and_the_average(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    dm = _datamodule(num_train=24)
    first = FERClassifier("compact_cnn", optimizer=_sgd, ema_decay=0.9)
    _trainer(tmp_path, max_epochs=1, callbacks=[checkpoint]).fit(first, datamodule=dm)
    saved = torch.load(checkpoint.last_model_path, map_location="cpu", weights_only=False)
    recorder = _RecordWeights(WATCHED[:1])
    resumed = FERClassifier("compact_cnn", optimizer=_sgd, ema_decay=0.9)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[recorder, ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(resumed, datamodule=dm, ckpt_path=checkpoint.last_model_path)
    name = WATCHED[0]
    torch.testing.assert_close(recorder.before_batch[0][name], saved["current_model_state"][name])
    n = int(saved["averaging_state"]["n_averaged"])  # updates so far: the average continues, it does not restart
    assert n == 3 and len(recorder.after_step) == 3
    expected = saved["state_dict"][name].clone()
    for k, value in enumerate(step[name] for step in recorder.after_step):
        expected = torch.lerp(expected, value, 1.0 - min(0.9, (1.0 + n + k) / (10.0 + n + k)))
    torch.testing.assert_close(resumed.state_dict()[name], expected)


def test_ema_with_decay_0_is_the_raw_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FERClassifier("compact_cnn", optimizer=_sgd)
    recorder = _RecordWeights(WATCHED[:2])
    _trainer(max_epochs=1, limit_val_batches=0, callbacks=[recorder, EMA(decay=0.0)]).fit(
        model, datamodule=_datamodule(num_train=24))
    for name in WATCHED[:2]:
        torch.testing.assert_close(model.state_dict()[name], recorder.after_step[-1][name])


def test_ema_decay_is_validated() -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        FERClassifier("compact_cnn", ema_decay=1.0)
    assert not [cb for cb in FERClassifier("compact_cnn").configure_callbacks() if isinstance(cb, EMA)]
    (callback,) = [cb for cb in FERClassifier("compact_cnn", ema_decay=0.99).configure_callbacks()
                   if isinstance(cb, EMA)]
    assert callback.decay == 0.99


# --- Optimizer and scheduler groups -------------------------------------------------------------------------------


def _configured(cfg: DictConfig) -> tuple[FERClassifier, torch.optim.Optimizer, dict[str, Any] | None]:
    model: FERClassifier = instantiate(cfg.model)
    configured = model.configure_optimizers()
    if isinstance(configured, dict):
        return model, configured["optimizer"], configured["lr_scheduler"]
    return model, configured, None


def test_default_optimizer_and_scheduler_are_unchanged(tmp_path: Path) -> None:
    _, optimizer, scheduler = _configured(_cfg(tmp_path, ["+experiment=compact_cnn"]))
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["lr"] == 3e-3 and optimizer.defaults["weight_decay"] == 1e-4
    assert type(scheduler["scheduler"]) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert scheduler["scheduler"].T_max == 30


def test_sgd_nesterov_and_plateau_on_accuracy(tmp_path: Path) -> None:
    model, optimizer, scheduler = _configured(_cfg(tmp_path, ["model=timm", "model.pretrained=false",
                                                              "model/optimizer=sgd", "model/scheduler=plateau"]))
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["nesterov"] is True and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["weight_decay"] == 1e-4  # not AdamW's 0.05
    plateau = scheduler["scheduler"]
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau) and plateau.mode == "max"
    assert scheduler["monitor"] == "val/acc" == model.hparams.scheduler_monitor


def test_plateau_on_loss_and_constant_lr(tmp_path: Path) -> None:
    model, _, scheduler = _configured(_cfg(tmp_path, ["model/scheduler=plateau_loss"]))
    assert scheduler["scheduler"].mode == "min" and scheduler["monitor"] == "val/loss"
    _, optimizer, scheduler = _configured(_cfg(tmp_path, ["model=compact_cnn", "model/scheduler=none"]))
    assert scheduler is None and type(optimizer) is torch.optim.AdamW


def test_plateau_mode_must_match_the_monitor(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, ["model/scheduler=plateau", "model.scheduler_monitor=val/loss"])
    with pytest.raises(Exception, match="mode=max.*wants mode=min"):
        instantiate(cfg.model)


def test_cosine_warmup_learning_rates(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, ["model=compact_cnn", "model/scheduler=cosine_warmup", "model.scheduler.warmup_epochs=3",
                          "trainer.max_epochs=10", "model.optimizer.lr=0.1"])
    _, optimizer, scheduler = _configured(cfg)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler["scheduler"].step()
    expected = [0.025, 0.05, 0.075] + [0.1 * 0.5 * (1 + math.cos(math.pi * (e - 3) / 7)) for e in range(3, 10)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    assert lrs[3] == pytest.approx(0.1) and lrs == sorted(lrs[:4]) + sorted(lrs[4:], reverse=True)
    assert warmup_cosine_factor(10, 3, 10) == pytest.approx(0.0)
    assert warmup_cosine_factor(10, 3, 10, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_cosine_warmup_without_warmup_is_cosine_annealing() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    ours_opt, ref_opt = torch.optim.SGD([param], lr=0.1), torch.optim.SGD([param], lr=0.1)
    ours = cosine_with_warmup(ours_opt, warmup_epochs=0, max_epochs=8)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=8)
    for _ in range(8):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
        ours_opt.step(), ref_opt.step()
        ours.step(), reference.step()


def test_cosine_warmup_schedules_parameter_groups_added_later() -> None:
    """Staged fine-tuning adds the backbone group mid-run and appends its rate to `base_lrs`."""
    head, backbone = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([head], lr=0.1)
    scheduler = WarmupCosineLR(optimizer, warmup_epochs=1, max_epochs=4)
    optimizer.step(), scheduler.step()
    optimizer.add_param_group({"params": [backbone], "lr": 0.01, "initial_lr": 0.01})
    scheduler.base_lrs.append(0.01)
    optimizer.step(), scheduler.step()
    expected = warmup_cosine_factor(2, 1, 4)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1 * expected, 0.01 * expected])
    assert "lr_lambdas" in scheduler.state_dict()  # checkpoints can store it


# --- VGG-FER ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "params"), [(40, 29_890_759), (44, 29_890_759), (48, 40_376_519)])
def test_vgg_fer_takes_40_to_48_px_crops(size: int, params: int) -> None:
    net = create_network("vgg_fer", num_classes=7, in_chans=1, drop_rate=0.2, input_size=size)
    assert net(torch.zeros(2, 1, size, size)).shape == (2, 7)
    assert sum(p.numel() for p in net.parameters()) == params
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.features) == 8
    assert net.get_classifier() is net.classifier


def test_vgg_fer_linear_probe_freezes_the_convolutions() -> None:
    model = FERClassifier("vgg_fer", input_size=40, finetune="linear_probe")
    assert model.backbone_modules() == [model.net.features]


# --- Speed flags --------------------------------------------------------------------------------------------------


def test_channels_last_keeps_state_dict_keys(tmp_path: Path) -> None:
    model = FERClassifier("compact_cnn", optimizer=_sgd, channels_last=True)
    keys = list(model.state_dict())
    _trainer(fast_dev_run=True).fit(model, datamodule=_datamodule())
    assert model.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert list(model.state_dict()) == keys == list(FERClassifier("compact_cnn").state_dict())


def test_compile_keeps_state_dict_keys_and_stays_out_of_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """With dynamo's eager backend (fast); the inductor run is `test_compile_with_inductor` (slow)."""
    compiled: list[Any] = []
    real_compile = torch.compile

    def eager_compile(module: torch.nn.Module) -> Any:
        compiled.append(real_compile(module, backend="eager"))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", eager_compile)
    model = FERClassifier("compact_cnn", optimizer=_sgd, compile=True)
    keys = list(model.state_dict())
    _trainer(fast_dev_run=True).fit(model, datamodule=_datamodule())
    assert len(compiled) == 1 and model._loop_net() is compiled[0]
    assert list(model.state_dict()) == keys and "_compiled_net" not in dict(model.named_modules())
    x = torch.randn(2, 1, 48, 48)
    torch.testing.assert_close(model.eval()(x), model.net(x))  # inference runs the eager network


@pytest.mark.slow
def test_compile_with_inductor(tmp_path: Path) -> None:
    """A real torch.compile (C++ inductor on CPU, ~30 s), with EMA, through a checkpoint and back."""
    model = FERClassifier("compact_cnn", optimizer=_sgd, compile=True, channels_last=True, ema_decay=0.9)
    keys = list(model.state_dict())
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[checkpoint]).fit(
        model, datamodule=_datamodule())
    assert list(model.state_dict()) == keys
    loaded = FERClassifier.from_checkpoint(checkpoint.last_model_path)
    assert loaded.speed_settings.compile is False and loaded._loop_net() is loaded.net


# --- Experiments --------------------------------------------------------------------------------------------------


def test_cpu_budget_and_vgg_fer_experiments_hold_their_recipes(tmp_path: Path) -> None:
    cpu = _cfg(tmp_path, ["+experiment=cpu_budget"])
    assert (cpu.model.backbone, cpu.model.input_size, cpu.transforms.crop_size) == ("compact_cnn", 44, 44)
    # The 30-minute budget: about 19 s per epoch with validation on 2 cores (experiments/accuracy/README.md).
    assert cpu.model.ema_decay > 0 and cpu.transforms.erasing_p > 0 and cpu.trainer.max_epochs * 19 <= 30 * 60
    assert cpu.data.num_workers == 0  # loader workers take CPU from the convolutions on 2 cores
    assert cpu.model.scheduler._target_.endswith("cosine_with_warmup") and cpu.trainer.precision == "32-true"
    vgg = _cfg(tmp_path, ["+experiment=vgg_fer"])
    assert (vgg.model.backbone, vgg.model.input_size, vgg.transforms.crop_size) == ("vgg_fer", 40, 40)
    assert vgg.model.optimizer._target_ == "torch.optim.SGD" and vgg.model.optimizer.nesterov is True
    assert vgg.model.loss.label_smoothing == 0.1 and vgg.transforms.erasing_p == 0.5 and vgg.trainer.max_epochs >= 50
    gpu = _cfg(tmp_path, ["+experiment=vgg_fer", "trainer=gpu_bf16"])
    assert gpu.trainer.precision == "bf16-mixed" and gpu.trainer.accelerator == "gpu"


def test_cpu_budget_checkpoint_exports_to_onnx_with_its_crop(tmp_path: Path) -> None:
    """A short cpu_budget run (EMA, 44 px crops) ends in a checkpoint that inference and ONNX export take as is."""
    from fer_lightning.inference.classifier import TorchEmotionClassifier
    from fer_lightning.inference.export import export_onnx, parity, parity_faces

    cfg = _cfg(tmp_path, ["+experiment=cpu_budget", "logger=none", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                          "callbacks.progress_bar=null", "callbacks.model_summary=null", *SMALL_SYNTHETIC])
    metrics, _ = train(cfg)
    ckpt = Path(metrics["best_ckpt_path"])
    classifier = TorchEmotionClassifier.from_checkpoint(ckpt)
    assert isinstance(classifier.eval_transform.transforms[0], A.CenterCrop)
    assert classifier.eval_transform.transforms[0].height == 44 and classifier.model.hparams.input_size == 44
    onnx_path = export_onnx(ckpt, tmp_path / "model.onnx")
    assert parity(ckpt, onnx_path, parity_faces(classifier.eval_transform, count=4)).max_abs_diff < 1e-5


def test_recipe_switches_compose_into_a_fast_dev_run(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, ["+experiment=compact_cnn", "+debug=fdr", "logger=csv", "model.mixing.mixup_alpha=0.2",
                          "model.mixing.cutmix_alpha=1.0", "model.ema_decay=0.99", "transforms.crop_size=40",
                          "transforms.erasing_p=0.5", "model/optimizer=sgd", "model/scheduler=cosine_warmup",
                          *SMALL_SYNTHETIC])
    metrics, objects = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and objects["model"].hparams.input_size == 40

