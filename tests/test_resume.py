"""Interruption and resume: a killed run resumes to the same metrics; Ctrl-C saves and closes; same seed, same run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_train_cfg
from wandb_records import iter_records

from fer_lightning.checkpoints import resolve_resume_path
from fer_lightning.train import train

ROOT = Path(__file__).resolve().parents[1]
# Every source of randomness in play: shuffling, random crop/flip/affine augmentation, dropout, Mixup/CutMix,
# plus the state that must survive a restart: EMA weights, cosine scheduler, optimizer moments, best score.
RUN = ["data=synthetic", "data.num_train=160", "data.num_val=64", "data.num_test=64", "data.batch_size=16",
       "+experiment=compact_cnn", "trainer.max_epochs=3", "trainer.deterministic=true", "model.ema_decay=0.9",
       "model.mixing.mixup_alpha=0.2", "model.mixing.prob=0.5", "callbacks.progress_bar=null", "seed=7"]
# What legitimately differs between two runs of the same training.
RUN_SPECIFIC = {"best_ckpt_path", "output_dir", "train_time_s", "train/images_per_s"}


def _cli(args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "FER_LIGHTNING_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT / "tests"), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "fer_lightning", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _comparable(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in RUN_SPECIFIC}


def _wandb_run_ids(run_dir: Path) -> list[str]:
    return [p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")]


def _checkpoint_position(path: Path) -> tuple[int, int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["epoch"], checkpoint["global_step"]


# workers=0 is the same path minus the loader workers' RNG state: `make test-all` runs it, CI's budget the other
@pytest.mark.parametrize("workers", [pytest.param(0, marks=pytest.mark.slow), 2])
def test_a_run_killed_mid_epoch_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path: Path, workers: int) -> None:
    run = [*RUN, f"data.num_workers={workers}", "logger=wandb"]
    straight = _cli([*run, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    kill = "+callbacks.kill={_target_:kill_switch.KillAt,epoch:1,batch:3,signal_name:SIGKILL}"
    killed = _cli([*run, kill, f"hydra.run.dir={tmp_path / 'killed'}"], tmp_path)
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no handler ran, nothing was tidied up
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert _checkpoint_position(last) == (0, 10)  # the end of epoch 0 (10 batches), the newest one on disk
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = _cli([*run, f"hydra.run.dir={tmp_path / 'resumed'}", f"ckpt_path={tmp_path / 'killed'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {last}" in resumed.stdout + resumed.stderr
    assert _comparable(tmp_path / "resumed") == _comparable(tmp_path / "straight")
    assert _comparable(tmp_path / "resumed")["epochs"] == 3
    assert list((tmp_path / "killed" / "checkpoints").glob("epoch*.ckpt"))  # a resume never deletes earlier files
    # its metrics.csv reads as one run: epoch 0 (before the cut) once, the cut epoch's lost batches not twice
    assert _val_curve(tmp_path / "resumed") == _val_curve(tmp_path / "straight")
    assert [epoch for epoch, _ in _val_curve(tmp_path / "resumed")] == [0, 1, 2]
    # the resumed run continues the killed run's W&B run instead of starting a new one
    assert _wandb_run_ids(tmp_path / "resumed") == _wandb_run_ids(tmp_path / "killed")
    assert _wandb_run_ids(tmp_path / "killed") != _wandb_run_ids(tmp_path / "straight")


def test_ctrl_c_saves_a_checkpoint_closes_wandb_and_the_run_resumes(tmp_path: Path) -> None:
    run = [*RUN, "data.num_workers=0", "logger=wandb"]
    ctrl_c = "+callbacks.kill={_target_:kill_switch.KillAt,epoch:1,batch:4,signal_name:SIGINT}"
    started = time.monotonic()
    stopped = _cli([*run, ctrl_c, f"hydra.run.dir={tmp_path / 'stopped'}"], tmp_path)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    interrupted = tmp_path / "stopped" / "checkpoints" / "interrupted.ckpt"
    assert _checkpoint_position(interrupted) == (1, 14)  # mid-epoch 1: 10 batches of epoch 0 + 4
    timer_state = torch.load(interrupted, map_location="cpu", weights_only=False)["callbacks"]["EpochTimer"]
    assert timer_state["total_train_time_s"] > 0  # epoch 0 and the 4 batches of epoch 1 travel with the run
    assert f"ckpt_path={tmp_path / 'stopped'}" in stopped.stdout + stopped.stderr  # tells how to resume
    (wandb_run,) = (tmp_path / "stopped" / "wandb").glob("offline-run-*")
    (log_file,) = wandb_run.glob("run-*.wandb")
    exits = [r.exit.exit_code for r in iter_records(log_file) if r.WhichOneof("record_type") == "exit"]
    assert exits == [1]  # the run was closed (not left "running"/crashed) and marked as not finished

    # a run directory resumes its newest checkpoint: here the mid-epoch one
    assert resolve_resume_path(tmp_path / "stopped") == interrupted
    resumed = _cli([*run, f"hydra.run.dir={tmp_path / 'resumed'}", f"ckpt_path={tmp_path / 'stopped'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["global_step"] == 30
    # Training time is both parts' training, not the clock since boot for the epoch resumed in its middle
    assert timer_state["total_train_time_s"] < metrics["train_time_s"] < time.monotonic() - started
    assert _wandb_run_ids(tmp_path / "resumed") == [wandb_run.name.rsplit("-", 1)[-1]]


def test_a_run_resumed_in_its_own_folder_keeps_the_curves_logged_before_the_cut(tmp_path: Path) -> None:
    # every step logged and written at once: the killed run's file holds the cut epoch's first batches too
    run = [*RUN, "data.num_workers=0", "logger=csv", "+logger.csv.flush_logs_every_n_steps=1",
           "trainer.log_every_n_steps=1", f"hydra.run.dir={tmp_path / 'run'}"]
    kill = "+callbacks.kill={_target_:kill_switch.KillAt,epoch:2,batch:3,signal_name:SIGKILL}"
    killed = _cli([*run, kill], tmp_path)
    assert killed.returncode == -9, killed.stderr[-3000:]
    before_cut = _val_curve(tmp_path / "run")
    assert [epoch for epoch, _ in before_cut] == [0, 1]
    run_id = json.loads((tmp_path / "run" / ".run_id.json").read_text())["run_id"]
    # how experiments/resume_in_place.sh continues a cut run; Lightning would delete metrics.csv here
    resumed = _cli([*run, f"ckpt_path={tmp_path / 'run'}"], tmp_path, {"FER_LIGHTNING_RUN_ID": run_id})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _val_curve(tmp_path / "run")[:2] == before_cut
    assert [epoch for epoch, _ in _val_curve(tmp_path / "run")] == [0, 1, 2]
    rows = _csv_rows(tmp_path / "run")
    assert [int(row["step"]) for row in rows if row.get("train/loss_epoch")] == [9, 19, 29]
    # the batches of the cut epoch that no checkpoint held (steps 20-22) are logged once, by the resumed run
    assert [int(row["step"]) for row in rows if row.get("train/loss_step")] == list(range(30))


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(epoch, PublicTest accuracy) as logged during training; the final evaluation's rows left out."""
    rows = [row for row in _csv_rows(run_dir) if row.get("val/acc") and row.get("train/loss_epoch", "") == ""]
    return [(int(float(row["epoch"])), round(float(row["val/acc"]), 6)) for row in rows
            if int(float(row["epoch"])) < 3]


def test_last_checkpoint_is_written_every_epoch_not_only_when_the_best_improves(tmp_path: Path) -> None:
    # lr=0: PublicTest accuracy never improves after epoch 0, so the best checkpoint stays at epoch 0
    cfg = compose_train_cfg(tmp_path, [*RUN, "model.ema_decay=0", "model.optimizer.lr=0.0", "data.num_workers=0",
                                       "logger=none"])
    metrics, _ = train(cfg)
    assert Path(metrics["best_ckpt_path"]).name.startswith("epoch000")
    assert _checkpoint_position(tmp_path / "checkpoints" / "last.ckpt") == (2, 30)  # the last epoch, not the best one


def test_the_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        cfg = compose_train_cfg(tmp_path / name, [*RUN, "trainer.max_epochs=2", "data.num_workers=0",
                                                   "logger=none", f"seed={seed}"])
        runs[name] = _comparable(Path(train(cfg)[0]["output_dir"]))
    assert runs["a"] == runs["b"]
    assert runs["a"]["train/loss"] != runs["c"]["train/loss"]


def test_resume_path_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such.ckpt"):
        resolve_resume_path(tmp_path / "no-such.ckpt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run"):
        resolve_resume_path(tmp_path / "empty_run")


def test_resuming_from_a_checkpoint_of_another_network_fails_before_training(tmp_path: Path) -> None:
    shipped = ROOT / "fer_lightning" / "assets" / "fer2013_compact_cnn.ckpt"
    result = _cli(["data=synthetic", "+experiment=scratch_cnn", "logger=csv", f"ckpt_path={shipped}",
                   f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode != 0
    assert "was trained with backbone 'compact_cnn'" in result.stderr and "+experiment=compact_cnn" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
