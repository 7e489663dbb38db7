"""`python -m fer_lightning` as a user runs it (Hydra app, run directory, errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "FER_LIGHTNING_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "fer_lightning", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_trains_and_writes_a_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(["data=synthetic", "+experiment=compact_cnn", "+debug=limit", "logger=csv",
                   "callbacks.progress_bar=null", f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic" and "test/acc" in metrics
    assert Path(metrics["best_ckpt_path"]).is_file()
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "train.log").is_file()


def test_cli_missing_data_says_where_it_looked(tmp_path: Path) -> None:
    missing = tmp_path / "no_fer_here"
    result = _run([f"data.root={missing}", "+debug=fdr", "logger=none", f"hydra.run.dir={tmp_path / 'r'}"],
                  tmp_path)
    assert result.returncode != 0
    assert f"FER2013 not found at {missing}" in result.stderr
    assert "kagglehub" in result.stderr


def test_cli_unknown_experiment_lists_the_available_ones(tmp_path: Path) -> None:
    result = _run(["+experiment=resnett", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert result.returncode != 0
    assert "resnet" in result.stderr and "Could not find 'experiment/resnett'" in result.stderr


def test_multirun_gives_each_job_its_own_run_dir(tmp_path: Path) -> None:
    result = _run(["--multirun", "data=synthetic", "+experiment=compact_cnn,scratch_cnn", "+debug=fdr", "logger=csv",
                   "callbacks.progress_bar=null", "data.num_train=56", "data.num_val=28", "data.num_test=28",
                   f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent.name for p in (tmp_path / "logs").glob("train/multiruns/*/*/metrics.json"))
    assert jobs == ["0_synthetic_compact_cnn", "1_synthetic_scratch_cnn"]
