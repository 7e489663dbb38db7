"""`fer-train` / `python -m fer_lightning [overrides]`: the Hydra shell around `train(cfg)`, nothing else."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import fer_lightning  # noqa: F401  (registers resolvers before Hydra composes the config)
from fer_lightning.cli.common import preflight_then, run_job
from fer_lightning.cli_checks import run_checked
from fer_lightning.config import CONF_DIR
from fer_lightning.preflight import check_train_inputs


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    # Imported here: torch and Lightning take seconds to load, which `--cfg job`, `--help` and typos should not.
    from fer_lightning.train import train

    metrics, _ = run_job(train, cfg, logging.getLogger("fer_lightning"))
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None  # what Hydra sweepers (e.g. Optuna) maximise


def main() -> None:
    """Overrides are checked before Hydra composes: a typo fails in a line, with no run directory created."""
    run_checked(preflight_then(train_app, "train", check_train_inputs), "train")


if __name__ == "__main__":
    main()
