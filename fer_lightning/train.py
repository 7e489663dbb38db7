"""`train(cfg)`: fit on Training, select on PublicTest, report PrivateTest; returns metrics and objects.

Pure with respect to Hydra: it reads everything from `cfg` (including `paths.output_dir`), so tests and
notebooks call it with a composed config and no Hydra app around it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from fer_lightning.callbacks.timing import EpochTimer
from fer_lightning.checkpoints import (
    CheckpointMeta,
    check_checkpoint_matches,
    resolve_resume_path,
    safe_checkpoint_globals,
)
from fer_lightning.config import claim_run_dir, current_run_id
from fer_lightning.loggers import CSVLogger
from fer_lightning.models.module import FERClassifier
from fer_lightning.plots import save_confusion_matrix

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a config group dict; `null` entries switch one off."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@rank_zero_only
def _write_run_files(cfg: DictConfig, output_dir: Path) -> None:
    # Two launches resolved to one folder (the same hydra.run.dir twice, say) must not mix their files.
    claim_run_dir(output_dir, cfg.get("run_id") or current_run_id())
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


@rank_zero_only
def _write_results(metrics: dict[str, Any], model: FERClassifier, datamodule: LightningDataModule,
                   output_dir: Path) -> None:
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    truncation = _truncation_note(metrics, model.class_names)
    if truncation:
        log.warning("TRUNCATED EVALUATION, not a full-split result: %s (trainer.limit_val_batches / "
                    "limit_test_batches / fast_dev_run). metrics.json: eval_faces, truncated; classes without a "
                    "scored face are null.", truncation)
    matrix = model.confusion_matrices.get("test")
    if matrix is not None:
        (output_dir / "confusion_matrix.json").write_text(json.dumps(matrix.tolist()) + "\n")
        if getattr(datamodule, "is_synthetic", False):
            split = "test split of SYNTHETIC faces (not FER2013)"
        else:
            official = getattr(datamodule, "val_source", "").startswith("official")
            split = f"{datamodule.name} test split" + (" (PrivateTest)" if official else "")
        title = f"{split}\naccuracy {metrics.get('test/acc', float('nan')):.4f}, checkpoint chosen on val"
        faces = metrics.get("eval_faces", {}).get("test")
        if "test" in metrics.get("truncated", []) and faces:
            title += f"\nTRUNCATED: {faces['evaluated']} of {faces['total']} faces"
        save_confusion_matrix(matrix, model.class_names, title, output_dir / "confusion_matrix.png")


def _continue_wandb_run(cfg: DictConfig, checkpoint: CheckpointMeta) -> None:
    """Resuming logs into the W&B run the checkpoint came from, so the dashboard shows one continuous run."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg or wandb_cfg.get("id"):
        return  # no W&B, or the user chose the run
    run_id = checkpoint.extras.get("wandb_run_id")
    if run_id:
        with open_dict(cfg):
            wandb_cfg.id = run_id
            wandb_cfg.resume = "allow"
        log.info("Resuming W&B run %s from %s", run_id, checkpoint.path)


def _keep_csv_history(loggers: list[Logger], resumed_step: int, resumed_run_dir: Path | None) -> None:
    """A resumed run's metrics.csv starts with the curves the cut run logged, so it reads as one run."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            kept = logger.keep_history_before(resumed_step, resumed_run_dir)
            if kept:
                log.info("Resuming at step %d: kept %d earlier rows of %s/metrics.csv", resumed_step, kept,
                         logger.log_dir)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, then evaluate the best checkpoint (chosen on val = PublicTest) on val and test (PrivateTest)."""
    output_dir = Path(cfg.paths.output_dir)
    resumed_step: int | None = None
    resumed_run_dir: Path | None = None
    if cfg.get("ckpt_path"):
        with open_dict(cfg):
            cfg.ckpt_path = str(resolve_resume_path(cfg.ckpt_path))
        # before any work: a checkpoint of another network or class set fails here, with the overrides that fit
        checkpoint = check_checkpoint_matches(cfg.ckpt_path, cfg.model)
        if cfg.get("train", True):
            _continue_wandb_run(cfg, checkpoint)
            resumed_step = checkpoint.global_step
            resumed_run_dir = checkpoint.run_dir  # None for a checkpoint copied out of its run folder
    _write_run_files(cfg, output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: LightningDataModule = instantiate(cfg.data)
    model: FERClassifier = instantiate(cfg.model)
    loggers: list[Logger] = _instantiate_all(cfg.get("logger"))
    callbacks: list[Callback] = _instantiate_all(cfg.get("callbacks"))
    if resumed_step is not None:
        _keep_csv_history(loggers, resumed_step, resumed_run_dir)
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer: Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if getattr(datamodule, "is_synthetic", False):
        log.warning("Training on SYNTHETIC faces (data=synthetic): a demo, not a FER2013 result.")
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    finished = False
    try:
        with safe_checkpoint_globals():  # config-born hyperparameters (OmegaConf lists) in weights_only loads
            if cfg.get("train", True):
                trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics = _evaluate(cfg, trainer, model, datamodule)
        for logger in loggers:
            logger.log_hyperparams({"data": datamodule.describe()})
        _write_results(metrics, model, datamodule, output_dir)
        log.info("Results: val/acc=%s test/acc=%s (metrics.json in %s)",
                 metrics.get("val/acc"), metrics.get("test/acc"), output_dir)
        finished = True
    finally:
        if not finished:
            _explain_resume(trainer, output_dir)
        for logger in loggers:
            if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
                # each multirun job closes its own run, even when it fails or is interrupted (Lightning turns
                # Ctrl-C into SystemExit(1) after its callbacks saved checkpoints/interrupted.ckpt)
                run_dir = getattr(logger.experiment, "dir", None)
                offline = bool(getattr(getattr(logger.experiment, "settings", None), "_offline", False))
                logger.experiment.finish(exit_code=0 if finished else 1)
                if offline and run_dir:  # W&B's own summary is off (quiet): this is the line to act on
                    log.info("W&B run saved offline; upload it with: wandb sync %s", Path(run_dir).parent)

    return metrics, {"trainer": trainer, "model": model, "datamodule": datamodule, "output_dir": output_dir}


@rank_zero_only
def _explain_resume(trainer: Trainer, output_dir: Path) -> None:
    saved = [p for p in (output_dir / "checkpoints" / "interrupted.ckpt", output_dir / "checkpoints" / "last.ckpt")
             if p.is_file()]
    if saved and trainer.state.status == TrainerStatus.INTERRUPTED:
        log.warning("Training stopped at epoch %d, step %d. Resume with: python -m fer_lightning <same overrides> "
                    "ckpt_path=%s", trainer.current_epoch, trainer.global_step, output_dir)


def _evaluate(cfg: DictConfig, trainer: Trainer, model: FERClassifier,
              datamodule: LightningDataModule) -> dict[str, Any]:
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None and cfg.get("train", True) else ""
    best_path = best_path or (cfg.get("ckpt_path") or "")
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, EpochTimer)), None)
    metrics: dict[str, Any] = {
        **datamodule.describe(),
        "experiment": cfg.get("experiment_name"),
        "backbone": model.hparams.backbone,
        "pretrained": model.hparams.pretrained,
        "pretrained_file": model.hparams.pretrained_file,
        "finetune": model.finetune_settings.mode,
        "gray_input": model.hparams.gray_input,
        "input_size": model.hparams.input_size,
        "params": sum(p.numel() for p in model.parameters()),
        "seed": cfg.get("seed"),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "train_time_s": timer.total_train_time_s if timer else None,
        "best_ckpt_path": str(Path(best_path).resolve()) if best_path else None,
        "output_dir": str(Path(cfg.paths.output_dir).resolve()),
    }
    if getattr(datamodule, "is_synthetic", False):
        metrics["note"] = "SYNTHETIC DATA: these numbers are not FER2013 results"
    for key in ("train/loss_epoch", "train/acc", "train/f1_macro", "train/images_per_s"):
        if key in trainer.callback_metrics:
            metrics[key.replace("_epoch", "")] = _as_float(trainer.callback_metrics[key])
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    if best_score is not None:
        metrics["val/acc_best"] = _as_float(best_score)
    if not cfg.get("test", True):
        _record_coverage(metrics, model, datamodule)  # the last validation during training: what selected
        return metrics
    ckpt_path = best_path or None
    if ckpt_path is None:
        log.warning("No checkpoint was saved (e.g. fast_dev_run): evaluating the current weights")
    # Validate the selected checkpoint too, so val/* and test/* in metrics.json describe the same model.
    for stage_metrics in (trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path),
                          trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)):
        for key, value in stage_metrics[0].items():
            metrics[key] = _as_float(value)
    if best_score is not None:  # the selection score over all epochs, not the re-validation's running max
        metrics["val/acc_best"] = _as_float(best_score)
    _record_coverage(metrics, model, datamodule)
    metrics.update(_score_extra_tests(cfg, trainer, model, ckpt_path))
    return metrics


def _score_extra_tests(cfg: DictConfig, trainer: Trainer, model: FERClassifier, ckpt_path: str | None
                       ) -> dict[str, Any]:
    """`extra_test=ckplus`: the selected checkpoint scored on faces from elsewhere, after selection, never during
    it. Through the checkpoint file, as `python -m fer_lightning.evaluate` and the finder load it (EMA weights and
    eval transform included), so training's and re-evaluation's CK+ numbers are the same number."""
    from fer_lightning.data.folder_faces import instantiate_extra_tests
    from fer_lightning.evaluation import save_extra_test_figures, score_extra_tests
    from fer_lightning.inference.classifier import TorchEmotionClassifier, load_classifier

    sets = instantiate_extra_tests(cfg.get("extra_test"))
    if not sets or trainer.global_rank != 0:
        return {}
    test_sets = [test_set.load() for test_set in sets]
    if ckpt_path:
        classifier = load_classifier(ckpt_path)
    else:  # fast_dev_run saves nothing: the weights in memory, with the transform a checkpoint would store
        classifier = TorchEmotionClassifier(model.eval(), model.class_names, trainer.datamodule.eval_transform,
                                            device=str(model.device))
    metrics, probs = score_extra_tests([classifier], test_sets)
    metrics.pop("per_model", None)
    save_extra_test_figures(metrics, probs, test_sets, list(model.class_names), Path(cfg.paths.output_dir),
                            "checkpoint chosen on val")
    for logger in trainer.loggers:
        logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)}, step=trainer.global_step)
        logger.save()  # the trainer saved its loggers when testing ended: a CSVLogger would keep these in memory
    log.info("Extra test set(s): %s", ", ".join(f"{faces.name} acc={metrics[f'test/{faces.name}/acc']:.4f} "
                                                  f"({len(faces.labels)} faces)" for faces in test_sets))
    return metrics


def _record_coverage(metrics: dict[str, Any], model: FERClassifier, datamodule: LightningDataModule) -> None:
    """Say in metrics.json how much of each split the numbers cover, so a cut-down evaluation is never mistaken for
    a full one: `eval_faces` ({split: {evaluated, total}}), `truncated` (the splits scored on part of their faces)
    and null for a class with no face in what was scored (its accuracy is undefined there, not 0).

    Counted from the confusion matrices the metrics were computed with: after the DDP sync, so every rank's faces
    count once, whatever `limit_*_batches` (per rank) or `fast_dev_run` cut.
    """
    from fer_lightning.metrics import class_key

    totals = {split: sum(counts) for split, counts in getattr(datamodule, "class_counts", {}).items()}
    coverage: dict[str, dict[str, int]] = {}
    for split in ("val", "test"):
        matrix = model.confusion_matrices.get(split)
        if matrix is None or split not in totals:
            continue  # never evaluated (test=false, or a stage that ran no batch)
        support = matrix.sum(axis=1)
        coverage[split] = {"evaluated": int(support.sum()), "total": int(totals[split])}
        for name, faces in zip(model.class_names, support):
            if faces == 0 and class_key(split, name) in metrics:
                metrics[class_key(split, name)] = None
    metrics["eval_faces"] = coverage
    metrics["truncated"] = [split for split, faces in coverage.items() if faces["evaluated"] < faces["total"]]


def _truncation_note(metrics: dict[str, Any], class_names: tuple[str, ...]) -> str:
    """`val: 320 of 3589 faces; test: 320 of 3589 faces (no face of: sad)`, or "" for a full evaluation: the
    console's last word on a cut-down run, where a reader looks for the result."""
    notes = []
    for split in metrics.get("truncated", []):
        faces = metrics["eval_faces"][split]
        unscored = [name for name in class_names if metrics.get(f"{split}/acc_{name}", 0.0) is None]
        notes.append(f"{split}: {faces['evaluated']} of {faces['total']} faces"
                     + (f" (no face of: {', '.join(unscored)})" if unscored else ""))
    return "; ".join(notes)
