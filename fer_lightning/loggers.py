"""Lightning's W&B logger, minus the console noise it causes on every run.

Lightning passes `anonymous=None` to `wandb.init`, which wandb now answers with "The anonymous setting has no
effect" on every run; the key is dropped here. W&B's own banner and end-of-run summary (about 25 lines) are
switched off with `quiet` unless asked for (`verbose=true`); `train` prints the one line that matters, where the
run is and how to sync it.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    def __init__(self, *args: Any, quiet: bool = True, **kwargs: Any) -> None:
        if quiet and "settings" not in kwargs:
            import wandb

            kwargs["settings"] = wandb.Settings(quiet=True)
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
