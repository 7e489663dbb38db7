"""Cut-down evaluations (`trainer.limit_val_batches`, `limit_test_batches`): class-stratified val/test order, and
metrics.json, the console and the report saying how much of each split was scored.

FER2013 lists its test faces class by class, so without the stratified order the first batches are all angry.
`make_tiny_fer` writes the same class-ordered layout.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from conftest import compose_train_cfg, make_tiny_fer
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

import fer_lightning.data.datamodule as datamodule_module
from fer_lightning.data.datamodule import FER2013DataModule, stratified_order
from fer_lightning.labels import EMOTIONS
from fer_lightning.reporting import collect_runs, per_class_table, summarize, write_report
from fer_lightning.train import train

# FER2013's PrivateTest class sizes (angry ... neutral): 16x more happy than disgust faces.
PRIVATE_TEST = [491, 55, 528, 879, 594, 416, 626]


def _eval_transform() -> A.Compose:
    return A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])


def _datamodule(root: Path, cache_dir: Path, eval_batch_size: int = 8) -> FER2013DataModule:
    return FER2013DataModule(root=str(root), train_transform=_eval_transform(), eval_transform=_eval_transform(),
                             batch_size=8, eval_batch_size=eval_batch_size, num_workers=0, cache_dir=str(cache_dir))


def test_every_prefix_of_the_stratified_order_keeps_the_class_mix() -> None:
    labels = np.repeat(np.arange(7), PRIVATE_TEST)  # class-ordered, as FER2013's folders
    order = stratified_order(labels, seed=42)
    assert sorted(order) == list(range(len(labels)))  # a permutation: every face once
    share = np.array(PRIVATE_TEST) / len(labels)
    counts = np.zeros(7)
    for m, index in enumerate(order, start=1):
        counts[labels[index]] += 1
        assert np.abs(counts - m * share).max() < 1.0, f"prefix {m}: {counts} vs {m * share}"
    np.testing.assert_array_equal(order, stratified_order(labels, seed=42))  # reproducible from the seed
    assert not np.array_equal(order, stratified_order(labels, seed=43))  # the seed shuffles within each class


def test_val_and_test_loaders_mix_classes_from_the_first_batch_and_train_is_untouched(tmp_path: Path) -> None:
    tiny = make_tiny_fer(tmp_path, per_class={"train": 4, "val": 3, "test": 5})
    dm = _datamodule(tiny.zip, tmp_path / "c", eval_batch_size=7)
    dm.setup("fit")
    assert dm.splits["test"][1][:7].tolist() == [0, 0, 0, 0, 0, 1, 1]  # the source order: class by class
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        _, first = next(iter(loader))
        assert sorted(first.tolist()) == list(range(7)), split  # one face of every class in the first 7
        labels = np.concatenate([y.numpy() for _, y in loader])
        assert sorted(labels.tolist()) == sorted(dm.splits[split][1].tolist())  # the whole split, each face once
    train_dataset = dm.train_dataloader().dataset
    assert train_dataset.images is dm.splits["train"][0]  # training order and augmentation as before


def test_under_ddp_the_order_is_stratified_before_sharding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank takes every second face of the stratified order: together the ranks' first batches (what
    `limit_test_batches` keeps, per rank) are a stratified prefix, and every face is scored exactly once."""
    tiny = make_tiny_fer(tmp_path, per_class={"train": 2, "val": 2, "test": 10})
    dm = _datamodule(tiny.zip, tmp_path / "c", eval_batch_size=8)
    dm.setup("test")
    monkeypatch.setattr(datamodule_module, "_distributed", lambda: True)
    batches = {}
    for rank in (0, 1):
        monkeypatch.setattr(datamodule_module, "UnrepeatedDistributedSampler",
                            functools.partial(UnrepeatedDistributedSampler, num_replicas=2, rank=rank))
        batches[rank] = [y.numpy() for _, y in dm.test_dataloader()]
    labels = dm.splits["test"][1]
    assert sorted(np.concatenate([*batches[0], *batches[1]]).tolist()) == sorted(labels.tolist())  # each once
    first = np.concatenate([batches[0][0], batches[1][0]])  # limit_test_batches=1 on 2 ranks
    assert sorted(first.tolist()) == sorted(labels[dm.eval_order("test")[:16]].tolist())
    assert len(set(first.tolist())) == 7


def test_full_split_metrics_do_not_depend_on_the_order(trained_checkpoint: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = make_tiny_fer(tmp_path, per_class={"train": 2, "val": 9, "test": 11})
    overrides = ["data=fer2013", f"data.root={tiny.zip}", "data.eval_batch_size=16", "data.num_workers=0",
                 "+experiment=compact_cnn", "train=false", f"ckpt_path={trained_checkpoint}", "logger=none",
                 "callbacks.progress_bar=null"]
    stratified, _ = train(compose_train_cfg(tmp_path / "stratified", overrides))
    monkeypatch.setattr(datamodule_module, "stratified_order", lambda labels, seed: np.arange(len(labels)))
    source_order, _ = train(compose_train_cfg(tmp_path / "source_order", overrides))
    for split in ("val", "test"):
        keys = [f"{split}/acc", f"{split}/f1_macro", *(f"{split}/acc_{e}" for e in EMOTIONS)]
        assert {k: stratified[k] for k in keys} == {k: source_order[k] for k in keys}
        assert stratified[f"{split}/loss"] == pytest.approx(source_order[f"{split}/loss"], rel=1e-6)
    for run in ("stratified", "source_order"):
        assert json.loads((tmp_path / run / "metrics.json").read_text())["truncated"] == []
    assert (json.loads((tmp_path / "stratified" / "confusion_matrix.json").read_text())
            == json.loads((tmp_path / "source_order" / "confusion_matrix.json").read_text()))


@pytest.fixture(scope="module")
def truncated_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """1 test batch of 5 faces: 5 of the 70 PrivateTest faces, so two classes have no scored face."""
    root = tmp_path_factory.mktemp("truncated")
    tiny = make_tiny_fer(root, per_class={"train": 6, "val": 4, "test": 10})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_LIGHTNING_CACHE", str(root / "cache"))
        cfg = compose_train_cfg(root / "run", [
            "data=fer2013", f"data.root={tiny.zip}", "data.eval_batch_size=5", "data.num_workers=0",
            "+experiment=compact_cnn", "trainer.max_epochs=1", "trainer.limit_test_batches=1", "logger=csv",
            "callbacks.progress_bar=null", "seed=1"])
        metrics, _ = train(cfg)
    return root / "run", metrics


def test_metrics_json_says_how_much_was_evaluated_and_unscored_classes_are_null(truncated_run) -> None:
    run_dir, metrics = truncated_run
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == metrics
    assert on_disk["eval_faces"] == {"val": {"evaluated": 28, "total": 28}, "test": {"evaluated": 5, "total": 70}}
    assert on_disk["truncated"] == ["test"]
    scored = np.asarray(json.loads((run_dir / "confusion_matrix.json").read_text())).sum(axis=1)
    assert scored.tolist() == [1, 1, 1, 1, 1, 0, 0]  # the stratified order: one face per class, class by class
    for name, faces in zip(EMOTIONS, scored):
        value = on_disk[f"test/acc_{name}"]
        assert (value is None) if faces == 0 else isinstance(value, float), (name, faces, value)
    assert all(isinstance(on_disk[f"val/acc_{name}"], float) for name in EMOTIONS)  # val was scored in full


def test_the_console_warns_at_the_end_of_a_truncated_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tiny = make_tiny_fer(tmp_path, per_class={"train": 2, "val": 2, "test": 2})
    cfg = compose_train_cfg(tmp_path / "run", [
        "data=fer2013", f"data.root={tiny.zip}", "data.eval_batch_size=4", "data.num_workers=0",
        "+experiment=compact_cnn", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "logger=none", "callbacks.progress_bar=null"])
    with caplog.at_level(logging.WARNING, logger="fer_lightning.train"):
        train(cfg)
    warnings = [r.getMessage() for r in caplog.records if "TRUNCATED EVALUATION" in r.getMessage()]
    assert len(warnings) == 1
    assert "val: 4 of 14 faces" in warnings[0] and "test: 4 of 14 faces" in warnings[0]
    assert "no face of:" in warnings[0]  # 4 faces cannot cover 7 classes


def test_the_report_lists_a_truncated_run_apart_with_n_a_for_unscored_classes(truncated_run, tmp_path: Path) -> None:
    run_dir, metrics = truncated_run
    runs, failed = collect_runs(run_dir)
    (row,) = summarize(runs)
    assert row["kind"] == "debug" and row["truncated"] and "test: 5 of 70 faces" in row["notes"]
    unscored = [name for name in EMOTIONS if metrics[f"test/acc_{name}"] is None]
    assert unscored == ["surprise", "neutral"]
    cells = per_class_table([row]).splitlines()[-1].strip("| ").split(" | ")[1:]
    assert [name for name, cell in zip(EMOTIONS, cells) if cell == "n/a"] == unscored
    text = write_report(runs, failed, tmp_path / "out").read_text()
    assert "## Debug and cut-down runs: not results (1)" in text and "Best on PublicTest" not in text
    assert "truncated test: 5 of 70 faces" in text
