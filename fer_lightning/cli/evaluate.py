"""`fer-evaluate` / `python -m fer_lightning.evaluate ckpt_paths=[A,B] tta=flip data.root=PATH`: the Hydra shell
around `fer_lightning.evaluation.evaluate` (TTA and ensembles of checkpoints)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import fer_lightning  # noqa: F401  (registers resolvers before Hydra composes the config)
from fer_lightning.cli.common import preflight_then, run_job
from fer_lightning.cli_checks import run_checked
from fer_lightning.config import CONF_DIR
from fer_lightning.evaluation import evaluate
from fer_lightning.preflight import check_eval_inputs

log = logging.getLogger("fer_lightning.evaluate")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def evaluate_app(cfg: DictConfig) -> float | None:
    metrics = run_job(evaluate, cfg, log)
    return metrics.get("val/acc")  # what a sweep over tta / ensembles would maximise: never the test split


def main() -> None:
    """A typo in a key or option fails in a line, before Hydra starts a run."""
    run_checked(preflight_then(evaluate_app, "eval", check_eval_inputs), "eval")


if __name__ == "__main__":
    main()
