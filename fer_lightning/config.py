"""OmegaConf resolvers the configs use; registered on import of `fer_lightning`."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the checkout's configs (see README: Install)


def wandb_offline() -> bool:
    """Log to W&B offline unless the user can reach it: no API key configured means offline.

    `WANDB_MODE` wins when set; otherwise a key in `WANDB_API_KEY` or in ~/.netrc (what `wandb login`
    writes) means online. Offline runs can be uploaded later with `wandb sync`.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in {"offline", "dryrun", "disabled"}:
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(netrc_path).authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return True


def symmetric_range(limit: float, strength: float) -> ListConfig:
    """`[-limit*s, limit*s]`: one `transforms.strength` knob scales every augmentation range (for searches)."""
    return OmegaConf.create([-float(limit) * float(strength), float(limit) * float(strength)])


def scale_range(delta: float, strength: float) -> ListConfig:
    """`[1 - delta*s, 1 + delta*s]` for zoom-style augmentations."""
    return OmegaConf.create([1.0 - float(delta) * float(strength), 1.0 + float(delta) * float(strength)])


def register_resolvers() -> None:
    resolvers = {"fer_wandb_offline": wandb_offline, "fer_sym": symmetric_range, "fer_scale": scale_range,
                 "fer_mul": lambda a, b: float(a) * float(b)}
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()


def compose_config(config_name: str, overrides: list[str], output_dir: str | Path) -> DictConfig:
    """The config a Hydra app of this project would build (``train`` or ``eval``), outside the app.

    For tests and benchmark scripts: ``${hydra:...}`` interpolations resolve and the run directory is pinned to
    ``output_dir``, as in a real run.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]  # as in a Hydra app, the job's config does not carry the `hydra` node
    return cfg
