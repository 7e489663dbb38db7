"""OmegaConf resolvers the configs use; registered on import of `fer_lightning`."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf


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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("fer_wandb_offline"):
        OmegaConf.register_new_resolver("fer_wandb_offline", wandb_offline)


register_resolvers()
