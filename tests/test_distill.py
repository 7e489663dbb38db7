"""Knowledge distillation (`model.distill`, +experiment=distill): the loss, what the teachers see, how they load,
and that a student's checkpoint neither holds nor needs them."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_train_cfg
from lightning import Trainer
from omegaconf import DictConfig, open_dict
from torch import nn

import fer_lightning.models.module as module_mod
from fer_lightning.checkpoints import CheckpointMismatchError, CheckpointNotFoundError
from fer_lightning.data.datamodule import SyntheticFERDataModule
from fer_lightning.errors import FERLightningError
from fer_lightning.labels import EMOTIONS
from fer_lightning.models.distill import (
    DistillError,
    DistillSettings,
    InputSpec,
    Teacher,
    combined_loss,
    distillation_loss,
    teacher_input,
)
from fer_lightning.models.mixing import MixedBatch, mix_batch
from fer_lightning.models.module import FERClassifier, load_for_inference
from fer_lightning.preflight import check_train_inputs
from fer_lightning.train import train

ROOT = Path(__file__).resolve().parents[1]
SMALL_SYNTHETIC = ["data=synthetic", "data.num_train=96", "data.num_val=32", "data.num_test=32",
                   "data.batch_size=16", "data.eval_batch_size=32", "logger=none", "callbacks.progress_bar=null",
                   "trainer.accelerator=cpu"]


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _quiet(model: FERClassifier) -> FERClassifier:
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer attached
    return model


def _datamodule(size: int = 48, mean: float = 0.5, std: float = 0.25, augment: bool = False,
                num_train: int = 32) -> SyntheticFERDataModule:
    normalize = [A.Resize(size, size), A.Normalize(mean=mean, std=std, max_pixel_value=255.0)]
    train_transform = A.Compose(([A.RandomCrop(40, 40), A.HorizontalFlip(p=0.5)] if augment else []) + normalize)
    return SyntheticFERDataModule(train_transform=train_transform, eval_transform=A.Compose(normalize),
                                  num_train=num_train, num_val=16, num_test=16, batch_size=16, num_workers=0)


def _fit_fast(model: FERClassifier, datamodule: SyntheticFERDataModule, **trainer_kwargs: Any) -> Trainer:
    trainer = Trainer(**{"fast_dev_run": True, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                         "enable_model_summary": False, **trainer_kwargs})
    trainer.fit(model, datamodule=datamodule)
    return trainer


def _save_checkpoint(path: Path, **hparams: Any) -> Path:
    """A FERClassifier checkpoint as training writes it (one fast_dev_run batch, then `trainer.save_checkpoint`)."""
    model = FERClassifier("compact_cnn", optimizer=_sgd, **hparams)
    spec = InputSpec.of(model)
    trainer = _fit_fast(model, _datamodule(spec.size, spec.mean, spec.std))
    trainer.save_checkpoint(path)
    return path


def _student_spec() -> InputSpec:
    return InputSpec(size=40, mean=0.5, std=0.25)


# --- The loss -----------------------------------------------------------------------------------------------------

def test_distillation_loss_is_the_hand_computed_formula() -> None:
    student = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    teacher = torch.tensor([[1.0, 0.0, -1.0], [-0.5, 2.5, 0.5]])
    temperature = 2.5
    p_t = torch.exp(teacher / temperature) / torch.exp(teacher / temperature).sum(dim=1, keepdim=True)
    p_s = torch.exp(student / temperature) / torch.exp(student / temperature).sum(dim=1, keepdim=True)
    kl_per_face = (p_t * (torch.log(p_t) - torch.log(p_s))).sum(dim=1)
    expected = temperature ** 2 * kl_per_face.mean()
    kd = distillation_loss(student, p_t, temperature)
    torch.testing.assert_close(kd, expected)
    ce = torch.tensor(1.3)
    torch.testing.assert_close(combined_loss(ce, kd, 0.3), 0.7 * ce + 0.3 * expected)
    assert distillation_loss(teacher, p_t, temperature).abs() < 1e-6  # a student matching its teacher pays nothing


def test_training_step_loss_is_the_weighted_sum_with_the_usual_cross_entropy() -> None:
    """Label smoothing stays on the hard term; the soft term compares with the teacher at temperature T."""
    torch.manual_seed(0)
    student = _quiet(FERClassifier("compact_cnn", input_size=40, drop_rate=0.0, loss={"label_smoothing": 0.1},
                                   distill={"teachers": ["in-memory"], "temperature": 3.0, "weight": 0.4}))
    teacher_net = FERClassifier("compact_cnn", drop_rate=0.0).eval()  # 48 px, the default normalisation
    student.attach_teacher(Teacher([teacher_net], _student_spec(), temperature=3.0))
    x, y = torch.randn(6, 1, 40, 40), torch.arange(6) % 7
    loss = student.training_step((x, y), 0)
    student_logits = student(x)
    resized = F.interpolate(x * 0.25 + 0.5, size=(48, 48), mode="bilinear", align_corners=False)
    teacher_logits = teacher_net((resized - 0.5) / 0.25)
    p_t = (teacher_logits / 3.0).softmax(dim=1)
    kd = 9.0 * (p_t * (p_t.log() - (student_logits / 3.0).log_softmax(dim=1))).sum(dim=1).mean()
    ce = F.cross_entropy(student_logits, y, label_smoothing=0.1)
    torch.testing.assert_close(loss, 0.6 * ce + 0.4 * kd)
    torch.testing.assert_close(student.distill_loss_means["ce"].compute(), ce)
    torch.testing.assert_close(student.distill_loss_means["distill"].compute(), kd)


def test_weight_0_gives_exactly_the_cross_entropy_loss() -> None:
    torch.manual_seed(0)
    plain = _quiet(FERClassifier("compact_cnn", drop_rate=0.0, loss={"label_smoothing": 0.1}))
    teacher = Teacher([FERClassifier("compact_cnn").eval()], InputSpec(48, 0.5, 0.25), temperature=4.0)
    losses = {}
    for weight in (0.0, 0.5):
        student = _quiet(FERClassifier("compact_cnn", drop_rate=0.0, loss={"label_smoothing": 0.1},
                                       distill={"teachers": ["in-memory"], "weight": weight}))
        student.load_state_dict(plain.state_dict())
        student.attach_teacher(teacher)
        x, y = torch.randn(8, 1, 48, 48), torch.arange(8) % 7
        losses[weight] = student.training_step((x, y), 0), plain.training_step((x, y), 0)
    distilled, cross_entropy = losses[0.0]
    assert torch.equal(distilled, cross_entropy)
    assert not torch.isclose(*losses[0.5])  # with a weight, the teacher does change the loss


def test_distill_settings_are_validated_with_the_key_named() -> None:
    assert not DistillSettings().enabled and DistillSettings().weight == 0.5  # [] = off, whatever the weight
    assert DistillSettings(teachers="a.ckpt").teachers == ("a.ckpt",)  # type: ignore[arg-type]
    with pytest.raises(DistillError, match="model.distill.temperature must be > 0"):
        DistillSettings(teachers=("a.ckpt",), temperature=0.0)
    with pytest.raises(DistillError, match=r"model.distill.weight must be in \[0, 1\]"):
        DistillSettings(teachers=("a.ckpt",), weight=1.5)
    with pytest.raises(DistillError, match="model.distill.teachers is not set"):
        DistillSettings(teachers=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model.distill has no \['temp'\]"):
        FERClassifier("compact_cnn", distill={"temp": 2.0})
    model = FERClassifier("compact_cnn", distill={"teachers": ("a.ckpt",), "temperature": 2})
    assert model.hparams.distill == {"teachers": ["a.ckpt"], "temperature": 2.0, "weight": 0.5}  # plain data


# --- What the teachers see ----------------------------------------------------------------------------------------

class _Recorder:
    """The inputs a network gets, from a forward pre-hook."""

    def __init__(self, module: nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        module.register_forward_pre_hook(lambda _, args: self.inputs.append(args[0].detach().clone()))


def test_teachers_see_the_students_augmented_and_mixed_image_in_their_own_input_format(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A student on 40 px crops (flipped, cropped, mixed) and two teachers: 48 px with another normalisation, and
    32 px (a downscale, antialiased). Each teacher gets exactly the student's network input, converted."""
    torch.manual_seed(0)
    student = FERClassifier("compact_cnn", input_size=40, optimizer=_sgd, mixing={"mixup_alpha": 0.4},
                            speed={"channels_last": True}, distill={"teachers": ["in-memory"]})
    big = FERClassifier("compact_cnn", input_size=48, input_mean=0.4, input_std=0.3).eval()
    small = FERClassifier("compact_cnn", input_size=32, input_mean=0.6, input_std=0.2).eval()
    student.attach_teacher(Teacher([big, small], InputSpec.of(student), temperature=4.0, channels_last=True))
    seen_by_student, seen_by_big, seen_by_small = _Recorder(student.net), _Recorder(big), _Recorder(small)
    batches, mixed = [], []

    def recording_mix(x: torch.Tensor, y: torch.Tensor, *args: Any) -> MixedBatch | None:
        batches.append(x.clone())
        mixed.append(mix_batch(x, y, *args))
        return mixed[-1]

    monkeypatch.setattr(module_mod, "mix_batch", recording_mix)
    datamodule = _datamodule(size=40, augment=True)
    _fit_fast(student, datamodule)
    Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(student, datamodule=datamodule)
    assert len(seen_by_big.inputs) == len(seen_by_small.inputs) == 1  # the training batch; validation/test: never
    student_input = seen_by_student.inputs[0]
    assert mixed[0] is not None and torch.equal(student_input, mixed[0].x)  # the student trained on the mixed batch
    assert not torch.allclose(mixed[0].x, batches[0])  # (the augmented batch before mixing was another image)
    pixels = student_input * 0.25 + 0.5
    up = F.interpolate(pixels, size=(48, 48), mode="bilinear", align_corners=False)
    down = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(seen_by_big.inputs[0], (up - 0.4) / 0.3)
    torch.testing.assert_close(seen_by_small.inputs[0], (down - 0.6) / 0.2)


def test_teacher_input_is_the_student_batch_itself_when_the_pipelines_agree() -> None:
    x = torch.randn(2, 1, 48, 48)
    assert teacher_input(x, InputSpec(48, 0.5, 0.25), InputSpec(48, 0.5, 0.25)) is x
    three = teacher_input(x, InputSpec(48, 0.5, 0.25), InputSpec(48, 0.5, 0.25, in_chans=3))
    assert three.shape == (2, 3, 48, 48) and torch.equal(three[:, 2], x[:, 0])


def test_an_ensemble_averages_the_teachers_softened_probabilities() -> None:
    torch.manual_seed(0)
    first = FERClassifier("compact_cnn").eval()
    second = FERClassifier("compact_cnn", input_size=44, input_mean=0.45, input_std=0.3).eval()
    student = InputSpec(48, 0.5, 0.25)
    x = torch.randn(4, 1, 48, 48)
    ensemble = Teacher([first, second], student, temperature=2.0)(x)
    with torch.no_grad():
        p_first = (first(x) / 2.0).softmax(dim=1)
        p_second = (second(teacher_input(x, student, InputSpec.of(second))) / 2.0).softmax(dim=1)
    torch.testing.assert_close(ensemble, (p_first + p_second) / 2)
    assert not torch.allclose(ensemble, p_first, atol=1e-4) and not torch.allclose(ensemble, p_second, atol=1e-4)
    torch.testing.assert_close(ensemble.sum(dim=1), torch.ones(4))


# --- Loading the teachers -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("teachers")
    return {
        "fer": _save_checkpoint(folder / "fer.ckpt", input_size=44, input_mean=0.45, input_std=0.3),
        "reordered": _save_checkpoint(folder / "reordered.ckpt", class_names=tuple(reversed(EMOTIONS))),
    }


def test_teachers_load_frozen_in_eval_mode(teacher_files: dict[str, Path]) -> None:
    teacher = Teacher.from_checkpoints([teacher_files["fer"]], EMOTIONS, InputSpec(40, 0.5, 0.25), 4.0,
                                       load_model=load_for_inference)
    (model,) = teacher.models
    assert isinstance(model, FERClassifier) and model.hparams.input_size == 44
    assert teacher.specs == (InputSpec(44, 0.45, 0.3),)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not model.training and not model.net.training


def test_a_teacher_of_other_classes_is_refused_with_its_path(teacher_files: dict[str, Path], tmp_path: Path) -> None:
    reordered = str(teacher_files["reordered"])
    with pytest.raises(CheckpointMismatchError, match=f"teacher {reordered} predicts 7 classes") as raised:
        Teacher.from_checkpoints([teacher_files["fer"], reordered], EMOTIONS, InputSpec(48, 0.5, 0.25), 4.0,
                                 load_model=load_for_inference)
    assert "model.class_names" in str(raised.value) and "in the same order" in str(raised.value)
    cfg = compose_train_cfg(tmp_path, ["+experiment=distill", *SMALL_SYNTHETIC,
                                       f"model.distill.teachers=['{reordered}']"])
    with pytest.raises(CheckpointMismatchError, match=f"teacher {reordered} predicts"):
        check_train_inputs(cfg)


def test_every_missing_teacher_file_is_named_in_one_error(teacher_files: dict[str, Path], tmp_path: Path) -> None:
    missing = [tmp_path / "gone_a.ckpt", tmp_path / "nowhere" / "gone_b.ckpt"]
    paths = [str(teacher_files["fer"]), *map(str, missing)]
    cfg = compose_train_cfg(tmp_path, ["+experiment=distill", *SMALL_SYNTHETIC,
                                       "model.distill.teachers=[" + ",".join(f"'{p}'" for p in paths) + "]"])
    with pytest.raises(CheckpointNotFoundError) as raised:
        check_train_inputs(cfg)
    message = str(raised.value)
    assert "model.distill.teachers: 2 of 3 teacher checkpoints not found" in message
    assert all(str(path) in message for path in missing) and str(teacher_files["fer"]) not in message
    # the run itself refuses them the same way when fitting starts (a notebook calling train(cfg) has no preflight)
    with pytest.raises(CheckpointNotFoundError, match="2 of 3 teacher checkpoints not found"):
        train(cfg)


def test_the_distill_experiment_without_teachers_says_what_to_pass(tmp_path: Path) -> None:
    cfg = compose_train_cfg(tmp_path, ["+experiment=distill", *SMALL_SYNTHETIC])
    with pytest.raises(DistillError, match=r"model.distill.teachers is not set: .*model.distill.teachers=\[a.ckpt"):
        check_train_inputs(cfg)
    plain = compose_train_cfg(tmp_path, ["+experiment=cpu_budget", *SMALL_SYNTHETIC])
    check_train_inputs(plain)  # every other experiment distils nothing and needs no teacher


@pytest.mark.parametrize(("overrides", "message"), [
    ([], "error: model.distill.teachers is not set: distillation needs its teacher checkpoints"),
    (["model.distill.teachers=[/no/such/a.ckpt,/no/such/b.ckpt]"],
     "error: model.distill.teachers: 2 of 2 teacher checkpoints not found: /no/such/a.ckpt, /no/such/b.ckpt"),
], ids=["not_set", "missing"])
def test_the_command_stops_with_one_line_before_creating_anything(overrides: list[str], message: str,
                                                                   tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "FER2013_ROOT")}
    environment.update({"WANDB_MODE": "offline", "MPLBACKEND": "Agg"})
    result = subprocess.run([sys.executable, "-m", "fer_lightning", "+experiment=distill", "data=synthetic",
                             *overrides], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(tmp_path.iterdir()) == []


# --- End to end through train(cfg) --------------------------------------------------------------------------------

def _train_epoch_logs(run_dir: Path) -> list[dict[str, float]]:
    """The CSV logger's rows of the training epochs (train/loss_epoch and whatever was logged with it)."""
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [{key: float(value) for key, value in row.items() if value} for row in rows if row.get("train/loss_epoch")]


@dataclass
class DistillRun:
    teacher: Path  # a compact CNN trained for 1 epoch by `train` (48 px faces)
    cfg: DictConfig  # +experiment=distill (44 px crops, EMA, channels_last) with that teacher, 1 epoch
    metrics: dict[str, Any]
    objects: dict[str, Any]


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistillRun]:
    out = tmp_path_factory.mktemp("distill")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_LIGHTNING_CACHE", str(out / "cache"))
        teacher_cfg = compose_train_cfg(out / "teacher", ["+experiment=compact_cnn", *SMALL_SYNTHETIC,
                                                          "trainer.max_epochs=1", "seed=1"])
        teacher_metrics, _ = train(teacher_cfg)
        teacher = Path(teacher_metrics["best_ckpt_path"])
        cfg = compose_train_cfg(out / "student", ["+experiment=distill", *SMALL_SYNTHETIC, "trainer.max_epochs=1",
                                                  f"model.distill.teachers=['{teacher}']", "model.distill.weight=0.7",
                                                  "logger=csv"])
        check_train_inputs(cfg)
        metrics, objects = train(cfg)
        yield DistillRun(teacher, cfg, metrics, objects)


def test_a_distilled_run_trains_on_both_losses(distill_run: DistillRun) -> None:
    model = distill_run.objects["model"]
    assert distill_run.metrics["experiment"] == "distill" and 0.0 <= distill_run.metrics["test/acc"] <= 1.0
    logged = _train_epoch_logs(Path(distill_run.metrics["output_dir"]))
    assert len(logged) == 1
    ce, kd = logged[0]["train/loss_ce"], logged[0]["train/loss_distill"]
    assert kd > 0.0
    assert logged[0]["train/loss_epoch"] == pytest.approx(0.3 * ce + 0.7 * kd, rel=1e-5)
    teacher = model.teacher
    assert teacher is not None and teacher.paths == (str(distill_run.teacher),)
    assert teacher.specs[0].size == 48 and model.hparams.input_size == 44  # the teacher got 44 px crops, resized
    # the teacher came from its file and left training unchanged: frozen, batch-norm statistics included
    saved = torch.load(distill_run.teacher, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in teacher.models[0].state_dict().items():
        assert torch.equal(value.cpu(), saved[name]), name


def test_the_student_checkpoint_holds_no_teacher_and_loads_without_the_teacher_files(
        distill_run: DistillRun, tmp_path: Path) -> None:
    best = Path(distill_run.metrics["best_ckpt_path"])
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert set(checkpoint["state_dict"]) == set(FERClassifier("compact_cnn").state_dict())
    assert distill_run.metrics["params"] == sum(p.numel() for p in FERClassifier("compact_cnn").parameters())
    assert checkpoint["hyper_parameters"]["distill"] == {"teachers": [str(distill_run.teacher)], "temperature": 4.0,
                                                         "weight": 0.7}  # recorded, not needed
    hidden = tmp_path / "teacher_moved_away.ckpt"
    shutil.move(distill_run.teacher, hidden)
    try:
        loaded = FERClassifier.from_checkpoint(best)
        assert loaded.teacher is None
        with torch.no_grad():
            probabilities = loaded(torch.zeros(2, 1, 44, 44)).softmax(dim=1)
        torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))
        from fer_lightning.inference import load_classifier

        assert load_classifier(best).class_names == EMOTIONS
    finally:
        shutil.move(hidden, distill_run.teacher)


def test_resuming_a_distilled_run_reloads_its_teachers(distill_run: DistillRun, tmp_path: Path) -> None:
    run_dir = Path(distill_run.metrics["output_dir"])
    cfg = distill_run.cfg.copy()
    with open_dict(cfg):
        cfg.ckpt_path = str(run_dir)
        cfg.trainer.max_epochs = 2
        cfg.paths.output_dir = str(tmp_path / "resumed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_LIGHTNING_CACHE", str(tmp_path / "cache"))
        metrics, objects = train(cfg)
    model = objects["model"]
    assert metrics["epochs"] == 2
    logged = _train_epoch_logs(tmp_path / "resumed")
    # the cut run's epoch 0 carried over (one continuous metrics.csv), then the resumed epoch, which distilled
    assert [row["epoch"] for row in logged] == [0.0, 1.0] and logged[-1]["train/loss_distill"] > 0
    teacher = model.teacher
    assert teacher is not None and teacher.paths == (str(distill_run.teacher),)
    saved = torch.load(distill_run.teacher, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in teacher.models[0].state_dict().items():
        assert torch.equal(value.cpu(), saved[name]), name


@pytest.mark.parametrize("change", [["model.distill.teachers=[]"], ["model.distill.weight=0.5"]],
                         ids=["teachers_left_out", "other_weight"])
def test_a_resume_that_changes_the_distillation_is_refused_with_the_overrides_it_started_with(
        distill_run: DistillRun, tmp_path: Path, change: list[str]) -> None:
    run_dir = Path(distill_run.metrics["output_dir"])
    same = ["+experiment=distill", *SMALL_SYNTHETIC, f"model.distill.teachers=['{distill_run.teacher}']",
            "model.distill.weight=0.7", f"ckpt_path={run_dir}"]
    check_train_inputs(compose_train_cfg(tmp_path / "same", same))  # the settings it started with resume
    with pytest.raises(DistillError, match=re.escape(
            f"trained with teachers ['{distill_run.teacher}'], temperature 4, weight 0.7; this run has ")
            + r".*Resume with the settings it started with: " + re.escape(
            f"model.distill.teachers=[{distill_run.teacher}] model.distill.temperature=4 model.distill.weight=0.7")):
        check_train_inputs(compose_train_cfg(tmp_path / "changed", [*same, *change]))


def test_a_resume_that_adds_teachers_to_a_run_trained_without_them_is_refused(distill_run: DistillRun,
                                                                            tmp_path: Path) -> None:
    teacher_run = distill_run.teacher.parent.parent  # the teacher's own run: trained without distillation
    cfg = compose_train_cfg(tmp_path, ["+experiment=compact_cnn", *SMALL_SYNTHETIC, f"ckpt_path={teacher_run}",
                                       f"model.distill.teachers=['{distill_run.teacher}']"])
    with pytest.raises(DistillError, match=r"trained with no distillation; this run has teachers .*"
                                           r"Resume with the settings it started with: model.distill.teachers=\[\]"):
        check_train_inputs(cfg)


def test_a_project_error_for_every_teacher_problem() -> None:
    for error in (DistillError, CheckpointNotFoundError, CheckpointMismatchError):
        assert issubclass(error, FERLightningError)
