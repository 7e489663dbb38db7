"""`fer-train` / `python -m fer_lightning [overrides]`: the Hydra shell around `train(cfg)`, nothing else."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import fer_lightning  # noqa: F401  (registers resolvers before Hydra composes the config)
from fer_lightning.cli_checks import run_checked
from fer_lightning.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    # Imported here: torch and Lightning take seconds to load, which `--cfg job`, `--help` and typos should not.
    from fer_lightning.train import train

    try:
        metrics, _ = train(cfg)
    except Exception:
        # Into the job's own log too (Hydra prints it only to stderr), so a failed sweep job says why.
        logging.getLogger("fer_lightning").exception("Job failed")
        raise
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None  # what Hydra sweepers (e.g. Optuna) maximise


def main() -> None:
    """Overrides are checked before Hydra composes: a typo fails in a line, with no run directory created."""
    run_checked(train_app, "train")


if __name__ == "__main__":
    main()
