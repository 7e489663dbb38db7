"""Knowledge distillation (Hinton et al. 2015): a student also learns the softened class probabilities of teachers.

`model.distill.teachers` names FERClassifier checkpoints (several make an ensemble, their softened probabilities
averaged); the training loss becomes

    (1 - weight) * CE(labels) + weight * T^2 * KL(p_teacher || p_student),   p = softmax(logits / T)

where CE is the student's usual loss (label smoothing, class weights, Mixup/CutMix) and the T^2 keeps the soft
term's gradients on the scale of the hard one's whatever the temperature (Hinton et al., section 2). A large, slow
network (or several) thus trains a small one that ships: the teachers' "dark knowledge" (how much a fearful face
looks surprised) is what a 0.3M-parameter CNN cannot find in FER2013's noisy labels alone.

The teachers see exactly the image the student trains on (after augmentation, cropping and mixing): the student's
normalised batch is mapped back to pixels, resized to each teacher's input size and normalised as that teacher was
trained (`teacher_input`). Nothing is precomputed or cached, so every augmented view gets its own soft target.

Teachers are held outside the student's module tree (see `FERClassifier.attach_teacher`): they are in no
`state_dict` (a student checkpoint holds the student alone and loads without the teacher files), in no optimizer,
and Lightning never switches them to training mode. They are loaded when fitting starts (`setup("fit")`), from
the run's `model.distill.teachers`, which is also how a resumed run gets them back; validation and test score the
student alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.errors import FERLightningError

TEACHERS_KEY = "model.distill.teachers"
TEACHERS_HINT = ("give the .ckpt files written by training (outputs/train/runs/<run>/checkpoints/*.ckpt), e.g. "
                 f"{TEACHERS_KEY}=[a.ckpt,b.ckpt]")


class DistillError(FERLightningError, ValueError):
    """A `model.distill` setting that cannot work (no teachers where they are required, a bad temperature...)."""


@dataclass(frozen=True)
class DistillSettings:
    """`model.distill`: `teachers` (checkpoint paths; empty = no distillation, whatever `weight` says; None = not
    set yet, an error), the softening `temperature` T, and `weight`, the share of the loss that matches the
    teachers (the rest is the cross-entropy on the labels)."""

    teachers: tuple[str, ...] = ()
    temperature: float = 4.0
    weight: float = 0.5

    def __post_init__(self) -> None:
        teachers: Any = self.teachers
        if teachers is None:  # what +experiment=distill leaves for the command line to fill ([] is "off")
            raise DistillError(f"{TEACHERS_KEY} is not set: distillation needs its teacher checkpoints; "
                               f"{TEACHERS_HINT} (or {TEACHERS_KEY}=[] to train without distillation)")
        if isinstance(teachers, (str, Path)):  # `model.distill.teachers=a.ckpt`: one teacher
            teachers = (teachers,)
        try:
            paths = tuple(str(path) for path in teachers)
        except TypeError:
            raise DistillError(f"{TEACHERS_KEY} must be a list of checkpoint paths, got {teachers!r}") from None
        if any(not path.strip() for path in paths):
            raise DistillError(f"{TEACHERS_KEY} has an empty path ({list(paths)}): {TEACHERS_HINT}")
        object.__setattr__(self, "teachers", paths)
        if not float(self.temperature) > 0.0:  # also refuses nan
            raise DistillError(f"model.distill.temperature must be > 0 (4 is usual), got {self.temperature}")
        if not 0.0 <= float(self.weight) <= 1.0:
            raise DistillError(f"model.distill.weight must be in [0, 1] (the teachers' share of the loss), "
                               f"got {self.weight}")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "weight", float(self.weight))

    @property
    def enabled(self) -> bool:
        return bool(self.teachers)

    def as_hparams(self) -> dict[str, Any]:
        """Plain data (a list, not a tuple), so the checkpoint loads with `weights_only=True` and reads as YAML."""
        return {"teachers": list(self.teachers), "temperature": self.temperature, "weight": self.weight}

    def overrides(self) -> str:
        """The command-line overrides that give these settings."""
        if not self.enabled:
            return f"{TEACHERS_KEY}=[]"
        return (f"{TEACHERS_KEY}=[{','.join(self.teachers)}] model.distill.temperature={self.temperature:g} "
                f"model.distill.weight={self.weight:g}")


def check_resumed_distill(saved: Mapping[str, Any] | None, wanted: DistillSettings, checkpoint: str | Path) -> None:
    """A resumed run distils as it started, or the command stops and gives the overrides that match.

    A checkpoint holds no teacher, so a resume rebuilds them from the command line; one that forgot the teachers'
    override would quietly continue without them (or with other teachers), and its result would be a recipe that
    no command line describes.
    """
    before = DistillSettings(**dict(saved)) if saved else DistillSettings()
    if not (before.enabled or wanted.enabled) or before.as_hparams() == wanted.as_hparams():
        return
    trained = (f"teachers {list(before.teachers)}, temperature {before.temperature:g}, weight {before.weight:g}"
               if before.enabled else "no distillation")
    now = (f"teachers {list(wanted.teachers)}, temperature {wanted.temperature:g}, weight {wanted.weight:g}"
           if wanted.enabled else "no distillation")
    raise DistillError(f"Checkpoint {checkpoint} was trained with {trained}; this run has {now}. Resume with the "
                       f"settings it started with: {before.overrides()}")


# --- The loss -------------------------------------------------------------------------------------------------

def soft_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in float32, whatever precision the network ran in (mixed precision included)."""
    return (logits.float() / temperature).softmax(dim=-1)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the probabilities at temperature T, averaged over the batch."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return temperature ** 2 * F.kl_div(log_student, teacher_probs, reduction="batchmean")


def combined_loss(hard_loss: torch.Tensor, soft_loss: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) * hard + weight * soft; the two ends are exact (weight 0 is the hard loss itself)."""
    if weight == 0.0:
        return hard_loss
    if weight == 1.0:
        return soft_loss
    return (1.0 - weight) * hard_loss + weight * soft_loss


# --- What a teacher sees --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec:
    """How a network's input is made: square size, the normalisation (x - mean) / std of [0, 1] pixels, channels."""

    size: int
    mean: float
    std: float
    in_chans: int = 1

    @classmethod
    def of(cls, model: nn.Module) -> InputSpec:
        """The input a FERClassifier was trained on, from its hyperparameters."""
        hparams = model.hparams  # type: ignore[union-attr]
        return cls(int(hparams.input_size), float(hparams.input_mean), float(hparams.input_std),
                   int(hparams.get("in_chans", 1)))


def teacher_input(x: torch.Tensor, student: InputSpec, teacher: InputSpec) -> torch.Tensor:
    """The student's normalised batch as the teacher's own pipeline would have made it from the same pixels.

    Undo the student's normalisation, resize to the teacher's size (bilinear; antialiased when shrinking, as a
    resize of the image would be), normalise as the teacher was trained; a 1-channel batch is repeated for a
    teacher built for more channels (`gray_input=repeat` teachers do that themselves, in their forward).
    """
    if (x.shape[-1], x.shape[-2], student.mean, student.std) == (teacher.size, teacher.size, teacher.mean,
                                                                 teacher.std):
        pixels_normalised = x  # the same pipeline: the very tensor the student got
    else:
        pixels = x.float() * student.std + student.mean
        if pixels.shape[-2:] != (teacher.size, teacher.size):
            shrinking = teacher.size < max(pixels.shape[-2:])
            pixels = F.interpolate(pixels, size=(teacher.size, teacher.size), mode="bilinear", align_corners=False,
                                   antialias=shrinking)
        pixels_normalised = (pixels - teacher.mean) / teacher.std
    if pixels_normalised.shape[1] != teacher.in_chans:
        if pixels_normalised.shape[1] != 1:
            raise DistillError(f"a teacher built for {teacher.in_chans}-channel input cannot take the student's "
                               f"{pixels_normalised.shape[1]}-channel batch")
        pixels_normalised = pixels_normalised.expand(-1, teacher.in_chans, -1, -1)
    return pixels_normalised


class Teacher(nn.Module):
    """Frozen classifiers whose averaged softened probabilities are the student's soft targets.

    Always in eval mode (batch-norm statistics and dropout of a teacher never change), no parameter requires a
    gradient, and it follows the student's batch to its device on first use: it is not part of the student's
    module tree, so Lightning does not move it.
    """

    def __init__(self, models: Sequence[nn.Module], student: InputSpec, temperature: float,
                 specs: Sequence[InputSpec] | None = None, paths: Sequence[str] = (),
                 channels_last: bool = False) -> None:
        """`models`: networks taking a normalised image batch to logits (FERClassifiers, whose `specs` default to
        their hyperparameters). `student`: how the student's batches are made. `paths`: where they came from."""
        super().__init__()
        if not models:
            raise DistillError(f"distillation needs at least one teacher: {TEACHERS_HINT}")
        self.models = nn.ModuleList(models)
        self.specs = tuple(specs) if specs is not None else tuple(InputSpec.of(model) for model in models)
        if len(self.specs) != len(self.models):
            raise ValueError(f"{len(self.models)} teachers but {len(self.specs)} input specs")
        self.student = student
        self.temperature = float(temperature)
        self.paths = tuple(str(path) for path in paths)
        self.channels_last = channels_last
        self.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        super().train(False)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], class_names: Sequence[str], student: InputSpec,
                         temperature: float, channels_last: bool = False, *,
                         load_model: Callable[[Path], nn.Module]) -> Teacher:
        return cls(load_teacher_models(paths, class_names, load_model=load_model), student, temperature,
                   paths=[str(path) for path in paths], channels_last=channels_last)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over teachers of softmax(logits / T), for the student's (augmented, mixed) batch `x`."""
        self._follow(x.device)
        probabilities = []
        for model, spec in zip(self.models, self.specs):
            inputs = teacher_input(x, self.student, spec)
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            probabilities.append(soft_probabilities(model(inputs), self.temperature))
        return torch.stack(probabilities).mean(dim=0)

    def _follow(self, device: torch.device) -> None:
        parameter = next(self.parameters(), None)
        if parameter is not None and parameter.device != device:
            self.to(device)


# --- Loading --------------------------------------------------------------------------------------------------

def load_teacher_models(paths: Sequence[str | Path], class_names: Sequence[str], *,
                        load_model: Callable[[Path], nn.Module]) -> list[nn.Module]:
    """Each checkpoint as an inference-ready FERClassifier, read the project's safe way (`weights_only=True`).

    `load_model` builds the network from a checked file (`FERClassifier.from_checkpoint`): passed in by the
    LightningModule, which imports this module, so that this module never imports it back (no import cycle).

    Every missing file is named in one error, before any is loaded; a teacher of other classes (or another order
    of them) than the student's is refused with its path, since its probabilities would train the wrong outputs.
    """
    from fer_lightning.checkpoints import (
        CheckpointError,
        CheckpointMismatchError,
        CheckpointNotFoundError,
        read_checkpoint_meta,
        safe_checkpoint_globals,
    )

    if not paths:
        raise DistillError(f"{TEACHERS_KEY} is empty: {TEACHERS_HINT}")
    missing = [str(path) for path in paths if not Path(path).expanduser().exists()]
    if missing:
        raise CheckpointNotFoundError(
            f"{TEACHERS_KEY}: {len(missing)} of {len(paths)} teacher checkpoints not found: {', '.join(missing)} "
            f"({TEACHERS_HINT})")
    models: list[nn.Module] = []
    for path in paths:
        path = Path(path).expanduser()
        if path.suffix.lower() == ".onnx":
            raise CheckpointError(f"teacher {path} is an exported ONNX model: distillation needs the .ckpt it was "
                                  "exported from")
        meta = read_checkpoint_meta(path)  # weights_only: refuses a file that would run code, naming it
        if tuple(meta.class_names) != tuple(class_names):
            raise CheckpointMismatchError(
                f"teacher {path} predicts {len(meta.class_names)} classes {list(meta.class_names)}, but the student "
                f"predicts {len(class_names)} classes {list(class_names)} (model.class_names): a teacher must be "
                "trained on the student's classes, in the same order")
        try:
            with safe_checkpoint_globals():  # hyperparameters from a config are OmegaConf containers
                model = load_model(path)
        except RuntimeError as err:  # state_dict shapes that disagree with the hyperparameters
            first = str(err).strip().splitlines()
            raise CheckpointError(f"teacher {path}: its weights do not fit the network its hyperparameters "
                                  f"describe ({meta.describe()}): {' '.join(first[:2])[:300]}") from err
        models.append(model)
    return models
