"""What a training checkpoint was trained as, read safely, and whether a run can resume from it.

A checkpoint of another backbone, class set or input size fails deep inside Lightning with a page of
`size mismatch for net.classifier.weight` lines; these checks say which setting differs and how to match it.

Checkpoints are read with `torch.load(weights_only=True)`: tensors and plain data only, so a downloaded file
cannot run code while it is inspected. That covers every checkpoint this project writes (the optimizer and
scheduler factories are kept out of `hyper_parameters` by `save_hyperparameters(ignore=[...])`); OmegaConf
containers, which Lightning stores when hyperparameters come straight from a config, are allowed as data.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fer_lightning.config import CONF_DIR
from fer_lightning.errors import FERLightningError
from fer_lightning.labels import EMOTIONS

NOT_A_CHECKPOINT_HINT = ("give a .ckpt written by training (outputs/train/runs/<run>/checkpoints/*.ckpt) or the "
                         "shipped fer_lightning/assets/fer2013_compact_cnn.ckpt")


class CheckpointError(FERLightningError, ValueError):
    """A file that is no fer_lightning training checkpoint (or cannot be read safely as one)."""


class CheckpointNotFoundError(FERLightningError, FileNotFoundError):
    """`ckpt_path` names no checkpoint file, or a run folder without one."""


class CheckpointMismatchError(FERLightningError, ValueError):
    """A checkpoint trained as another network (backbone, classes, input) than the one a run builds."""


@dataclass(frozen=True)
class CheckpointMeta:
    """The network a checkpoint holds and where its training stood; `extras` is `checkpoint["fer_lightning"]`."""

    path: Path
    backbone: str
    num_classes: int
    class_names: tuple[str, ...]
    input_size: int
    in_chans: int
    gray_input: str
    net_kwargs: dict[str, Any]  # the network's own arguments (model.net_kwargs); {} = its defaults
    epoch: int | None
    global_step: int | None
    hyper_parameters: dict[str, Any] = field(repr=False)
    extras: dict[str, Any] = field(repr=False)  # class_names, val_acc_best, wandb_run_id, eval_transform, data

    @property
    def run_dir(self) -> Path | None:
        """The training run folder the checkpoint sits in (`RUN_DIR/checkpoints/*.ckpt`); None for a copied file."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else None

    @property
    def data(self) -> dict[str, Any]:
        """What the model was trained on (`datamodule.describe()`): empty for checkpoints saved without one."""
        return dict(self.extras.get("data") or {})

    def describe(self, with_class_names: bool = False) -> str:
        return _describe(self.backbone, self.num_classes, self.class_names, self.input_size, self.in_chans,
                         self.gray_input, self.net_kwargs, with_class_names)


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The checkpoint's network and progress; a clear `FileNotFoundError`/`CheckpointError` naming the file."""
    path = Path(path).expanduser()
    checkpoint = _load_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, (dict, DictConfig)) or "backbone" not in hparams:
        state = checkpoint.get("state_dict", checkpoint)
        if _is_state_dict(state):
            raise CheckpointError(
                f"{path} holds weights ({len(state)} tensors) but no 'hyper_parameters': it is a plain state_dict, "
                "not a training checkpoint, so the network it belongs to is unknown. To start training from these "
                "weights use model.pretrained=true model.pretrained_file=PATH; otherwise " + NOT_A_CHECKPOINT_HINT)
        raise CheckpointError(f"{path} is a PyTorch file but not a fer_lightning checkpoint (no 'hyper_parameters' "
                              f"with a 'backbone'; keys: {sorted(map(str, checkpoint))[:8]}): {NOT_A_CHECKPOINT_HINT}")
    hparams = _plain(hparams)
    extras = _plain(checkpoint.get("fer_lightning") or {})
    num_classes = int(hparams.get("num_classes", len(EMOTIONS)))
    # The extras carry the names training wrote; the hyperparameters default to FER2013's when none were given.
    names = extras.get("class_names") or hparams.get("class_names") or (EMOTIONS if num_classes == len(EMOTIONS)
                                                                      else ())
    return CheckpointMeta(
        path=path,
        backbone=str(hparams["backbone"]),
        num_classes=num_classes,
        class_names=tuple(str(name) for name in names),
        input_size=int(hparams.get("input_size", 48)),
        in_chans=int(hparams.get("in_chans", 1)),
        gray_input=str(hparams.get("gray_input", "sum")),
        net_kwargs=dict(hparams.get("net_kwargs") or {}),
        epoch=_int_or_none(checkpoint.get("epoch")),
        global_step=_int_or_none(checkpoint.get("global_step")),
        hyper_parameters=hparams,
        extras=extras,
    )


def resolve_resume_path(ckpt_path: str | Path) -> Path:
    """`ckpt_path` may name a checkpoint or a run directory; a directory resumes its newest checkpoint.

    Newest by modification time between `last.ckpt` (end of an epoch: the resume is exact) and
    `interrupted.ckpt` (written on Ctrl-C or an error, mid-epoch: resumes where it stopped, not bit-exact).
    """
    path = Path(ckpt_path).expanduser()
    if not path.is_dir():
        if not path.is_file():
            raise CheckpointNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file or run directory")
        return path
    candidates = [c for c in (path / "checkpoints" / "last.ckpt", path / "checkpoints" / "interrupted.ckpt",
                              path / "last.ckpt", path / "interrupted.ckpt") if c.is_file()]
    if not candidates:
        raise CheckpointNotFoundError(f"ckpt_path={ckpt_path} is a directory without checkpoints/last.ckpt or "
                                "checkpoints/interrupted.ckpt; give the .ckpt file to resume from")
    return max(candidates, key=lambda c: c.stat().st_mtime_ns)


def check_checkpoint_matches(path: str | Path, model_cfg: DictConfig) -> CheckpointMeta:
    """Refuse to resume from (or test) a checkpoint of another network than `model_cfg` builds.

    Call it with the run's `cfg.ckpt_path` (a file) and `cfg.model` before `trainer.fit`/`trainer.test`; the
    error names every setting that differs and the overrides that match the checkpoint. Returns what it read.
    """
    meta = read_checkpoint_meta(path)
    wanted = _model_settings(model_cfg)
    found = {"backbone": meta.backbone, "num_classes": meta.num_classes, "class_names": meta.class_names,
             "input_size": meta.input_size, "in_chans": meta.in_chans, "gray_input": meta.gray_input,
             "net_kwargs": meta.net_kwargs}
    differing = [name for name, value in wanted.items() if value is not None and value != found[name]]
    if not differing:
        return meta
    with_names = "class_names" in differing and "num_classes" not in differing
    this_run = _describe(*(wanted[name] if wanted[name] is not None else found[name] for name in found),
                         with_class_names=with_names)
    raise CheckpointMismatchError(
        f"Checkpoint {path} was trained with {meta.describe(with_names)}; this run builds "
        f"{this_run.replace('backbone ', '', 1)} (different {', '.join(differing)}). "
        f"{_remedy(meta, model_cfg, differing)}")


def check_class_names(names: Sequence[str], expected: Sequence[str], source: str, purpose: str = "this") -> None:
    """A model whose outputs are not `expected` (e.g. FER2013's labels), in that order, cannot be scored on them."""
    if tuple(names) != tuple(expected):
        raise CheckpointMismatchError(
            f"{source} predicts {len(names)} classes {list(names)}, but {purpose} needs the {len(expected)} "
            f"classes {list(expected)} in that order: use a model trained on them (e.g. the shipped "
            "fer_lightning/assets/fer2013_compact_cnn.ckpt)")


# --- Reading --------------------------------------------------------------------------------------------------

def safe_checkpoint_globals() -> contextlib.AbstractContextManager[Any]:
    """Allow OmegaConf containers, as data, in `weights_only` loads inside this context (Lightning's included).

    Lightning stores hyperparameters that came straight from a config (e.g. `+model.class_names=[...]`) as
    DictConfig/ListConfig, which `torch.load(weights_only=True)`, Lightning's default under torch >= 2.6, refuses.
    Their unpickling only sets attributes: no code runs.
    """
    import torch
    from omegaconf import ListConfig, base, nodes

    node_types = [getattr(nodes, name) for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode",
                                                     "BooleanNode", "BytesNode", "PathNode") if hasattr(nodes, name)]
    return torch.serialization.safe_globals([
        DictConfig, ListConfig, base.ContainerMetadata, base.Metadata, *node_types, typing.Any,
        dict, list, tuple, int, float, str, bool, collections.defaultdict,
    ])


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path} (check the path; training writes them to "
                                "outputs/train/runs/<run>/checkpoints/)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory: give the .ckpt file inside it (e.g. {path}/checkpoints/"
                              "last.ckpt)")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an exported ONNX model, not a training checkpoint: give the .ckpt it was "
                              "exported from")
    try:
        with safe_checkpoint_globals():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if blocked:
            raise CheckpointError(
                f"{path} contains Python objects beyond tensors and plain data ({blocked.group(1)}); fer_lightning "
                "reads checkpoints with torch.load(weights_only=True) so that a file cannot run code when loaded. "
                "Re-save the checkpoint without them, or " + NOT_A_CHECKPOINT_HINT) from err
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it does not unpickle): "
                              f"{NOT_A_CHECKPOINT_HINT}") from err
    except Exception as err:  # truncated zip, random bytes, empty file: torch raises RuntimeError/EOFError/...
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{_first_line(err)}); it may be truncated (an interrupted copy or download): "
                              f"{NOT_A_CHECKPOINT_HINT}") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dictionary: "
                              f"{NOT_A_CHECKPOINT_HINT}")
    return checkpoint


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0][:160] if text else "no details"


def _is_state_dict(value: Any) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig,)) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=False)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


# --- Comparing ------------------------------------------------------------------------------------------------

def _describe(backbone: str, num_classes: int, class_names: Sequence[str], input_size: int, in_chans: int,
              gray_input: str, net_kwargs: dict[str, Any] | None = None, with_class_names: bool = False) -> str:
    classes = f"{num_classes} classes" + (f" {list(class_names)}" if with_class_names else "")
    channels = "" if (in_chans, gray_input) == (1, "sum") else f", in_chans={in_chans} gray_input={gray_input}"
    arguments = f", net_kwargs={_override_value(net_kwargs)}" if net_kwargs else ""
    return f"backbone '{backbone}' ({classes}, {input_size} px{channels}{arguments})"


def _override_value(value: Any) -> str:
    """A value as a Hydra override writes it: {widths:[32,64],hidden:512}."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(item) for item in value) + "]"
    return str(value)


def _model_settings(model_cfg: DictConfig) -> dict[str, Any]:
    """What `FERClassifier(**model_cfg)` would build; None for a setting the config cannot tell (unresolvable)."""

    def setting(name: str, default: Any) -> Any:
        try:
            value = OmegaConf.select(model_cfg, name, default=default, throw_on_resolution_failure=True)
        except Exception:  # e.g. ${hydra:...} outside a Hydra run
            return None
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value

    num_classes = setting("num_classes", len(EMOTIONS))
    names = setting("class_names", None)
    class_names = tuple(names) if names is not None else (EMOTIONS if num_classes == len(EMOTIONS) else None)
    return {
        "backbone": setting("backbone", None),
        "num_classes": None if num_classes is None else int(num_classes),
        "class_names": class_names,
        "input_size": None if setting("input_size", 48) is None else int(setting("input_size", 48)),
        "in_chans": None if setting("in_chans", 1) is None else int(setting("in_chans", 1)),
        "gray_input": setting("gray_input", "sum"),
        "net_kwargs": _net_kwargs_setting(setting("net_kwargs", {})),
    }


def _net_kwargs_setting(value: Any) -> dict[str, Any] | None:
    try:
        return plain_net_kwargs(value)
    except TypeError:
        return None  # FERClassifier names a malformed value itself


def plain_net_kwargs(value: Any) -> dict[str, Any]:
    """`model.net_kwargs` as plain data (dicts and lists): what a checkpoint stores, what `torch.load(
    weights_only=True)` reads back, and what a run's network is compared with. Empty: the network's defaults."""
    if value is None:
        return {}
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping):
        raise TypeError(f"model.net_kwargs must be a mapping of the network's arguments, got {value!r}")
    return {str(key): list(item) if isinstance(item, (list, tuple)) else item for key, item in value.items()}


def _remedy(meta: CheckpointMeta, model_cfg: DictConfig, differing: list[str]) -> str:
    """The overrides that build the checkpoint's network: the run's own, else an experiment with its backbone."""
    run_overrides = _run_overrides(meta.run_dir)
    if run_overrides:
        return (f"Resume with the checkpoint's own overrides ({' '.join(run_overrides)}, from its run's "
                ".hydra/overrides.yaml) or drop ckpt_path.")
    fixes: list[str] = []
    if "backbone" in differing:
        experiments = experiments_for_backbone(meta.backbone)
        if experiments:
            fixes.append(" or ".join(f"+experiment={name}" for name in experiments[:3]))
        else:
            option = _model_option_for_backbone(meta.backbone)
            fixes.append(f"model={option}" if option else f"model=timm model.backbone={meta.backbone}")
    if "input_size" in differing:
        raw = _raw_value(model_cfg, "input_size")
        key = "transforms.crop_size" if "transforms.crop_size" in str(raw) else "model.input_size"
        fixes.append(f"{key}={meta.input_size}")
    if "in_chans" in differing:
        fixes.append(f"model.in_chans={meta.in_chans}")
    if "gray_input" in differing:
        fixes.append(f"model.gray_input={meta.gray_input}")
    if "net_kwargs" in differing:
        fixes.append(f"'model.net_kwargs={_override_value(meta.net_kwargs)}'")
    if "num_classes" in differing or "class_names" in differing:
        return ("Its classes cannot be changed by a resume: drop ckpt_path, or use a checkpoint trained on this "
                "run's classes" + (f" (and {' '.join(fixes)})." if fixes else "."))
    what = "the checkpoint's experiment" if "backbone" in differing else "the checkpoint's settings"
    return f"Resume with {what} ({' '.join(fixes)}) or drop ckpt_path."


def _raw_value(cfg: DictConfig, key: str) -> Any:
    node = cfg._get_node(key) if key in cfg else None
    return node._value() if node is not None else None


def _run_overrides(run_dir: Path | None) -> list[str]:
    """`<run>/.hydra/overrides.yaml` of a checkpoint's run folder: the command that trained it."""
    if run_dir is None:
        return []
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = OmegaConf.load(overrides_file)
    except Exception:  # no Hydra run dir (copied checkpoint), or an unreadable file: fall back to the configs
        return []
    keep = ("+experiment=", "model=", "model/", "model.", "transforms.crop_size=", "+debug=overfit")
    return [str(item) for item in overrides if str(item).startswith(keep) and "ckpt_path" not in str(item)]


def experiments_for_backbone(backbone: str) -> list[str]:
    """Experiments (conf/experiment/*.yaml) whose model is `backbone`, read from the YAML files (no compose).

    Only those that run as they are: one naming distillation teachers (experiment=distill) needs files of the
    user's on the command line, so it is no remedy to suggest.
    """
    names = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
    return [name for name in names if _experiment_backbone(name, depth=0) == backbone and not _sets_teachers(name)]


def _sets_teachers(name: str) -> bool:
    distill = OmegaConf.select(OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml"), "model.distill")
    return isinstance(distill, DictConfig) and "teachers" in distill


def _experiment_backbone(name: str, depth: int) -> str | None:
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    if depth > 5 or not path.is_file():
        return None
    cfg = OmegaConf.load(path)
    own = OmegaConf.select(cfg, "model.backbone", default=None)
    if own is not None:
        return str(own)
    found = None
    for entry in cfg.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            found = _experiment_backbone(entry, depth + 1) or found  # another experiment it extends
        elif isinstance(entry, DictConfig):
            for key, option in entry.items():
                if str(key).replace("override ", "").strip() in ("/model", "model") and option:
                    found = _model_backbone(str(option)) or found
    return found


def _model_backbone(option: str) -> str | None:
    path = CONF_DIR / "model" / f"{option}.yaml"
    return str(OmegaConf.load(path).get("backbone")) if path.is_file() else None


def _model_option_for_backbone(backbone: str) -> str | None:
    options = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))
    return next((option for option in options if option != "timm" and _model_backbone(option) == backbone), None)

