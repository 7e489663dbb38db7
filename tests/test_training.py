"""A short real training on synthetic faces: learns, writes every run file, logs to W&B offline."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from conftest import compose_train_cfg
from wandb_records import read_offline_run

from fer_lightning.data.dataset import to_model_input
from fer_lightning.labels import EMOTIONS
from fer_lightning.models.module import FERClassifier
from fer_lightning.train import train


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        cfg = compose_train_cfg(out, [
            "data=synthetic", "+experiment=compact_cnn", "trainer.max_epochs=4", "trainer.accelerator=cpu",
            "data.num_train=2100", "data.num_val=350", "data.num_test=350", "logger=wandb",
            "callbacks.progress_bar=null", "seed=7",
        ])
        metrics, objects = train(cfg)
    return out, metrics, objects


def test_training_learns_far_above_chance(synthetic_run) -> None:
    _, metrics, _ = synthetic_run
    assert metrics["test/acc"] > 0.6  # chance is 1/7 = 0.14
    assert metrics["val/acc"] > 0.6 and metrics["test/f1_macro"] > 0.5
    assert metrics["val/acc_best"] == pytest.approx(metrics["val/acc"], abs=1e-6)  # val/* is the chosen ckpt


def test_run_dir_holds_config_checkpoints_metrics_and_confusion_matrix(synthetic_run) -> None:
    out, metrics, _ = synthetic_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    for key in ("val/acc", "val/f1_macro", "test/acc", "test/f1_macro", "best_ckpt_path", "class_counts"):
        assert key in on_disk, key
    for name in EMOTIONS:
        assert 0.0 <= on_disk[f"test/acc_{name}"] <= 1.0
    assert on_disk["synthetic"] is True and "SYNTHETIC" in on_disk["note"]
    assert Path(on_disk["best_ckpt_path"]).is_file()
    assert Path(on_disk["best_ckpt_path"]).parent == out / "checkpoints"
    assert (out / "config.yaml").is_file() and (out / "confusion_matrix.png").stat().st_size > 10_000
    assert (out / "csv" / "metrics.csv").is_file()


def test_wandb_offline_run_has_the_metrics_config_and_media(synthetic_run) -> None:
    out, metrics, _ = synthetic_run
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    assert run["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert len(run["history"]["val/acc"]) >= 4  # one per epoch (plus the re-validation of the best ckpt)
    assert any(key.startswith("lr-") for key in run["history"])
    assert run["config"]["model"]["backbone"] == "compact_cnn"
    assert "synthetic" in run["config"]["tags"]
    assert any(f.startswith("media/images/test/confusion_matrix") for f in run["files"])
    assert any(f.startswith("media/table/test/samples") for f in run["files"])
    assert any(f.startswith("media/table/test/per_class") for f in run["files"])


def test_checkpoint_alone_rebuilds_the_model_and_its_preprocessing(synthetic_run) -> None:
    _, metrics, objects = synthetic_run
    path = metrics["best_ckpt_path"]
    model = FERClassifier.from_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    transform = A.from_dict(checkpoint["fer_lightning"]["eval_transform"])
    images, _ = objects["datamodule"].splits["test"]
    batch = torch.stack([to_model_input(img, transform) for img in images[:16]])
    expected = torch.stack([to_model_input(img, objects["datamodule"].eval_transform) for img in images[:16]])
    torch.testing.assert_close(batch, expected)
    trained = objects["model"].eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch).softmax(-1), trained(batch).softmax(-1), atol=1e-5, rtol=0)
    assert checkpoint["fer_lightning"]["class_names"] == list(EMOTIONS)
    assert np.isclose(metrics["test/acc"], metrics["test/acc"])  # metrics are plain floats in JSON
