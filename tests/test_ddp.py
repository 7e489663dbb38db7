"""DDP (2 CPU processes over gloo) reports the metrics one process computes on the same data and checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_train_cfg

from fer_lightning.labels import EMOTIONS
from fer_lightning.train import train

ROOT = Path(__file__).resolve().parents[1]
# Odd split sizes: a padding DistributedSampler would count one PublicTest and one PrivateTest face twice.
DATA = ["data=synthetic", "data.num_train=160", "data.num_val=67", "data.num_test=61", "data.batch_size=16",
        "data.eval_batch_size=16", "data.num_workers=0", "+experiment=compact_cnn", "seed=3"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "FER_LIGHTNING_CACHE": str(out.parent / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "fer_lightning", *DATA, "trainer=ddp_cpu", "trainer.max_epochs=2", "logger=wandb",
         "callbacks.progress_bar=null", f"hydra.run.dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr and "All distributed processes registered" \
        in result.stdout + result.stderr
    return out


def test_ddp_metrics_equal_one_process_on_the_same_checkpoint(ddp_run: Path, tmp_path: Path) -> None:
    ddp = json.loads((ddp_run / "metrics.json").read_text())
    assert ddp["epochs"] == 2 and ddp["global_step"] == 10  # 160 faces / 2 processes / 16 per batch, 2 epochs
    single_cfg = compose_train_cfg(tmp_path, [*DATA, "trainer=cpu", "train=false", "logger=none",
                                              f"ckpt_path={ddp['best_ckpt_path']}", "callbacks.progress_bar=null"])
    single, _ = train(single_cfg)
    keys = [f"{stage}/{name}" for stage in ("val", "test")
            for name in ("acc", "f1_macro", *(f"acc_{e}" for e in EMOTIONS))]
    assert {k: ddp[k] for k in keys} == {k: single[k] for k in keys}  # counts over every face, exactly once
    for stage in ("val", "test"):  # mean losses: same numbers summed in a different order
        assert ddp[f"{stage}/loss"] == pytest.approx(single[f"{stage}/loss"], rel=1e-5)
    ddp_matrix = json.loads((ddp_run / "confusion_matrix.json").read_text())
    assert sum(map(sum, ddp_matrix)) == 61  # every PrivateTest face once, none padded in
    assert ddp_matrix == json.loads((tmp_path / "confusion_matrix.json").read_text())


def test_only_rank_zero_writes_run_files(ddp_run: Path) -> None:
    assert len(list((ddp_run / "wandb").glob("offline-run-*"))) == 1
    assert len(list((ddp_run / "checkpoints").glob("epoch*.ckpt"))) == 1
    assert (ddp_run / "checkpoints" / "last.ckpt").is_file()
