"""`python -m fer_lightning [overrides]`: the Hydra shell around `train(cfg)`, nothing else."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import fer_lightning  # noqa: F401  (registers resolvers before Hydra composes the config)
from fer_lightning.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics, _ = train(cfg)
    except Exception:
        # Into the job's own log too (Hydra prints it only to stderr), so a failed sweep job says why.
        logging.getLogger("fer_lightning").exception("Job failed")
        raise
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None  # what Hydra sweepers (e.g. Optuna) maximise


if __name__ == "__main__":
    main()
