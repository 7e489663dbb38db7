"""One way to build any network by name: the project's scratch CNNs, or any timm model."""

from __future__ import annotations

from collections.abc import Callable

import timm
from torch import nn

from fer_lightning.models.scratch import CompactCNN, SeedCNN

# Networks of this project, built with the same arguments as timm models (`drop_rate`, `in_chans`, ...).
SCRATCH_NETWORKS: dict[str, Callable[..., nn.Module]] = {"scratch_cnn": SeedCNN, "compact_cnn": CompactCNN}


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for and cannot be had: never fall back to a silent random init."""


def create_network(name: str, num_classes: int, in_chans: int = 1, pretrained: bool = False,
                   drop_rate: float = 0.0, input_size: int = 48) -> nn.Module:
    """Build `name` for `in_chans`-channel input and `num_classes` outputs.

    timm adapts a pretrained first convolution to `in_chans=1` by summing its RGB filters, so grayscale
    faces use ImageNet weights without being copied to three channels.
    """
    if name in SCRATCH_NETWORKS:
        if pretrained:
            raise PretrainedWeightsUnavailable(
                f"'{name}' is trained from scratch and has no pretrained weights; set model.pretrained=false"
            )
        return SCRATCH_NETWORKS[name](num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                                      input_size=input_size)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:10]
        raise ValueError(f"unknown network '{name}': not one of {sorted(SCRATCH_NETWORKS)} nor a timm model"
                         + (f"; similar timm names: {close}" if close else ""))
    if pretrained and not timm.is_model_pretrained(name):
        raise PretrainedWeightsUnavailable(f"timm has no pretrained weights for '{name}'; set model.pretrained=false")
    try:
        return timm.create_model(name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes,
                                 drop_rate=drop_rate)
    except Exception as err:
        if not pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"could not load pretrained weights for timm model '{name}' ({type(err).__name__}: {err}). "
            "timm downloads them from the Hugging Face Hub on first use: check the internet connection or "
            "HF_HUB_OFFLINE, or train from random init with model.pretrained=false"
        ) from err
