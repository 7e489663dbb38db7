"""A short real training on synthetic faces: learns, writes every run file, logs to W&B offline."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import wandb
from conftest import compose_train_cfg, make_tiny_fer
from wandb_records import read_offline_run

from fer_lightning.callbacks.wandb_media import pick_samples
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
    _close_wandb_service()
    return out, metrics, objects


def _close_wandb_service() -> None:
    """Stop the W&B service this process started: W&B advertises it in os.environ (WANDB_SERVICE), so subprocesses
    of later tests (test_resume's killed and resumed runs) would share it, and a run killed there stays "in use"."""
    wandb.teardown()


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
    # a full evaluation says so: every face of both splits scored, nothing truncated
    assert on_disk["eval_faces"] == {"val": {"evaluated": 350, "total": 350}, "test": {"evaluated": 350, "total": 350}}
    assert on_disk["truncated"] == []


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


# --- The W&B sample table on a class-ordered test split (as FER2013's) ----------------------------------------

@pytest.fixture(scope="module")
def class_ordered_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run on a tiny FER2013 whose PrivateTest lists its 8 faces per class class by class."""
    root = tmp_path_factory.mktemp("class_ordered")
    tiny = make_tiny_fer(root, per_class={"train": 8, "val": 3, "test": 8})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_LIGHTNING_CACHE", str(root / "cache"))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        cfg = compose_train_cfg(root / "run", [
            "data=fer2013", f"data.root={tiny.zip}", "data.num_workers=0", "+experiment=compact_cnn",
            "trainer.max_epochs=1", "logger=wandb", "callbacks.progress_bar=null", "seed=5"])
        train(cfg)
    _close_wandb_service()
    return root / "run"


def test_wandb_sample_table_mixes_every_class_right_and_wrong(class_ordered_run: Path) -> None:
    (run_dir,) = (class_ordered_run / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    (table_path,) = run["history"]["test/samples/path"]
    table = json.loads((run_dir / "files" / table_path).read_text())  # the offline run's copy of the table
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert Counter(row["true"] for row in rows) == {name: 4 for name in EMOTIONS}  # not the first 32: 4 classes
    assert all(row["correct"] == (row["true"] == row["predicted"]) for row in rows)
    assert {row["correct"] for row in rows} == {True, False}  # random faces: the model gets some right, most wrong
    assert len({row["index"] for row in rows}) == len(rows)


def test_sample_faces_are_files_of_the_run_folder_so_a_copy_syncs_them(class_ordered_run: Path,
                                                                       tmp_path: Path) -> None:
    """W&B stages a table's images outside the run folder; the faces are also in `samples/` and `test/sample_faces`,
    which W&B keeps in the offline run's `files/` and lists for upload: a copied run folder still has them all."""
    copy = shutil.copytree(class_ordered_run, tmp_path / "copied_run")
    (run_dir,) = (copy / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    (table_path,) = run["history"]["test/samples/path"]
    rows = json.loads((run_dir / "files" / table_path).read_text())["data"]
    (filenames,) = run["history"]["test/sample_faces/filenames"]
    assert len(filenames) == len(rows) == 28
    assert set(filenames) <= set(run["files"])  # listed for upload by `wandb sync`
    assert all((run_dir / "files" / name).stat().st_size > 100 for name in run["files"])  # and present in the copy
    columns = json.loads((run_dir / "files" / table_path).read_text())["columns"]
    for row in rows:
        face = dict(zip(columns, row))
        assert (copy / face["file"]).is_file() and face["file"].startswith("samples/")
        assert f"_{face['true']}_as_{face['predicted']}_" in face["file"]


def test_pick_samples_takes_right_and_wrong_faces_per_class_when_there_are_both() -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2)
    predicted = np.array([0, 0, 0, 0, 1, 2] + [1, 1, 1] + [0, 0])
    chosen = pick_samples(labels, predicted, per_class=4)
    by_class = {c: [(int(i), bool(predicted[i] == c)) for i in chosen if labels[i] == c] for c in (0, 1, 2)}
    assert by_class[0] == [(0, True), (1, True), (4, False), (5, False)]  # 2 of 4 right, both wrong ones
    assert by_class[1] == [(6, True), (7, True), (8, True)]  # never wrong: all it has
    assert by_class[2] == [(9, False), (10, False)]  # never right: all it has
