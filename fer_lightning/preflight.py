"""Checks a composed config can run, before anything is created: no run folder, no W&B run, no half-made outputs.

A command that fails after making its run folder leaves an empty run behind (which `wandb sync` would upload) and
hides the one useful line in a long traceback. What can be known before the run, is checked here, cheaply: the
data source is there and reads (bad files are named now, and the decode cache the run then loads is filled), the
checkpoints exist and fit the network, pretrained weights can be had. Each check raises the project error whose
message says what to change on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    from fer_lightning.models.distill import DistillSettings

SCRATCH_BACKBONES = ("scratch_cnn", "compact_cnn", "vgg_fer")  # built here, no hub weights (models/factory.py)


def check_train_inputs(cfg: DictConfig) -> None:
    """Everything `train(cfg)` needs from outside the config: checkpoint, pretrained weights, teachers, data."""
    resumed = None
    if cfg.get("ckpt_path"):
        from fer_lightning.checkpoints import check_checkpoint_matches, resolve_resume_path

        resumed = check_checkpoint_matches(resolve_resume_path(cfg.ckpt_path), cfg.model)
    check_pretrained_weights(cfg.model)
    check_network_arguments(cfg.model)
    if cfg.get("train", True):
        distill = distill_settings(cfg.model)
        if resumed is not None:
            from fer_lightning.models.distill import check_resumed_distill

            check_resumed_distill(resumed.hyper_parameters.get("distill"), distill, resumed.path)
        check_distill_teachers(cfg.model, distill)
    check_data(cfg.data)
    check_extra_tests(cfg.get("extra_test"))


def check_eval_inputs(cfg: DictConfig) -> None:
    """Everything `evaluate(cfg)` needs from outside the config: the model files, then the data.

    The settings that need no file (TTA mode, splits) are checked first: a typo there is the cheaper fix.
    """
    from fer_lightning.evaluation import check_splits, checkpoint_paths
    from fer_lightning.tta import check_mode

    check_mode(str(cfg.get("tta", "none")))
    check_splits(cfg.get("splits", ["val", "test"]))

    for path in checkpoint_paths(cfg.get("ckpt_paths")):
        if path.suffix.lower() != ".onnx":
            from fer_lightning.checkpoints import read_checkpoint_meta

            read_checkpoint_meta(path)
    check_data(cfg.data)
    check_extra_tests(cfg.get("extra_test"))


def check_data(data_cfg: DictConfig) -> None:
    """The datamodule accepts its settings (`data.train_fraction=0` is refused here, not after the run folder is
    made); a FER2013 source exists and reads; with the decode cache on, it is decoded now (the run then loads it)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:  # construction reads nothing: only the settings are checked
        datamodule: Any = instantiate(data_cfg, train_transform=None, eval_transform=None, num_workers=0)
    except InstantiationException as err:
        from fer_lightning.errors import FERLightningError

        if isinstance(err.__cause__, FERLightningError):  # the project's own message, not Hydra's wrapping of it
            raise err.__cause__ from None
        raise
    if not str(data_cfg.get("_target_", "")).endswith("FER2013DataModule"):
        return  # synthetic faces: nothing outside the config
    from fer_lightning.data.download import resolve_source

    root = Path(str(data_cfg.root)).expanduser()
    if data_cfg.get("download") and not root.exists():
        return  # the run downloads it (and says so if it cannot)
    resolve_source(root)
    if data_cfg.get("cache", True):
        datamodule.load_arrays()  # unusable files are all named here; the arrays go to the cache, then away


def check_extra_tests(node: DictConfig | None) -> None:
    """Every extra test set (`extra_test=ckplus`) reads, before training: a missing folder or an unmapped class
    folder would otherwise stop the run after its last epoch, when only the final scoring reads them."""
    from fer_lightning.data.folder_faces import instantiate_extra_tests

    for test_set in instantiate_extra_tests(node):
        test_set.load()


def check_network_arguments(model_cfg: DictConfig) -> None:
    """`model.net_kwargs` names only arguments the network takes (for the project's own networks, whose
    signatures are known without building them; timm checks its models' arguments when it builds them)."""
    from fer_lightning.checkpoints import plain_net_kwargs
    from fer_lightning.models.factory import check_net_kwargs

    check_net_kwargs(str(model_cfg.get("backbone")), plain_net_kwargs(model_cfg.get("net_kwargs")))


def check_pretrained_weights(model_cfg: DictConfig) -> None:
    """Hub weights for a pretrained timm backbone can be had (see `weights.check_hub_weights`)."""
    if not model_cfg.get("pretrained") or model_cfg.get("pretrained_file"):
        return
    backbone = str(model_cfg.get("backbone"))
    if backbone not in SCRATCH_BACKBONES:
        from fer_lightning.models.weights import check_hub_weights

        check_hub_weights(backbone)


def distill_settings(model_cfg: DictConfig) -> DistillSettings:
    """`model.distill` as the run will read it; a bad value (no teachers where required) is refused here."""
    from omegaconf import OmegaConf

    from fer_lightning.models.distill import DistillSettings
    from fer_lightning.models.module import settings

    node = model_cfg.get("distill")
    if node is None:
        return DistillSettings()
    values = {key: None if OmegaConf.is_missing(node, key) else node[key] for key in node}
    values = OmegaConf.to_container(OmegaConf.create(values), resolve=True)
    return settings(DistillSettings, values, "distill")


def check_distill_teachers(model_cfg: DictConfig, distill: DistillSettings) -> None:
    """Every teacher checkpoint of `distill` loads and predicts the student's classes.

    The teachers are otherwise loaded when fitting starts, after the run folder and W&B run exist. Every missing
    file is named in one error; the teachers are then loaded as the run will load them (`load_teacher_models`).
    """
    if not distill.enabled:
        return
    from omegaconf import OmegaConf

    from fer_lightning.labels import EMOTIONS
    from fer_lightning.models.distill import load_teacher_models
    from fer_lightning.models.module import load_for_inference
    names = OmegaConf.select(model_cfg, "class_names", default=None)
    load_teacher_models(distill.teachers, tuple(names) if names is not None else EMOTIONS,
                        load_model=load_for_inference)
