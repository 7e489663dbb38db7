"""The LightningDataModules: splits, batches, imbalance handling, synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from conftest import TinyFER, make_tiny_fer

from fer_lightning.data.datamodule import (
    DataConfigError,
    FER2013DataModule,
    SyntheticFERDataModule,
    auto_num_workers,
    resolve_num_workers,
    usable_cores,
)
from fer_lightning.data.synthetic import make_synthetic_faces
from fer_lightning.errors import FERLightningError


def _eval(size: int = 48) -> A.Compose:
    return A.Compose([A.Resize(size, size), A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])


def _dm(root: Path, cache_dir: Path, **kwargs) -> FER2013DataModule:
    return FER2013DataModule(root=str(root), train_transform=_eval(), eval_transform=_eval(), batch_size=8,
                             num_workers=0, cache_dir=str(cache_dir), **kwargs)


def test_official_splits_batches_and_cache(tiny_fer: TinyFER, tmp_path: Path) -> None:
    dm = _dm(tiny_fer.zip, tmp_path / "c")
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_counts == {"train": [4] * 7, "val": [2] * 7, "test": [2] * 7}
    assert dm.val_source.startswith("official")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 48, 48) and x.dtype == torch.float32 and y.dtype == torch.long
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1
    info = dm.describe()
    assert info["dataset"] == "fer2013" and info["synthetic"] is False


def test_prefixless_folder_gets_a_stratified_val_split_and_says_so(tmp_path: Path) -> None:
    tiny = make_tiny_fer(tmp_path, per_class={"train": 10, "val": 2, "test": 2}, prefixes=False)
    dm = _dm(tiny.folder, tmp_path / "c", val_fraction=0.2)
    dm.setup("fit")
    assert dm.class_counts["val"] == [2] * 7 and dm.class_counts["train"] == [8] * 7
    assert dm.class_counts["test"] == [4] * 7
    assert "stratified 20%" in dm.val_source and "no PublicTest" in dm.val_source


def test_resize_to_the_model_input_size(tiny_fer: TinyFER, tmp_path: Path) -> None:
    dm = FER2013DataModule(root=str(tiny_fer.csv), train_transform=_eval(96), eval_transform=_eval(96),
                           batch_size=4, num_workers=0, cache=False)
    dm.setup("test")
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 1, 96, 96)


def test_transform_without_normalize_is_rejected(tiny_fer: TinyFER, tmp_path: Path) -> None:
    dm = FER2013DataModule(root=str(tiny_fer.zip), train_transform=A.Compose([A.HorizontalFlip()]),
                           eval_transform=_eval(), num_workers=0, cache=False)
    dm.setup("fit")
    with pytest.raises(TypeError, match="Normalize"):
        next(iter(dm.train_dataloader()))


def test_class_weights_and_weighted_sampling_balance_an_imbalanced_set(tmp_path: Path) -> None:
    dm = SyntheticFERDataModule(train_transform=_eval(), eval_transform=_eval(), num_train=700, num_val=70,
                                num_test=70, batch_size=700, weighted_sampling=True, num_workers=0)
    dm.setup("fit")
    labels = dm.splits["train"][1]
    keep = (labels != 1) | (np.arange(len(labels)) % 10 == 0)  # disgust made 10x rarer, as in FER2013
    dm.splits["train"] = (dm.splits["train"][0][keep], labels[keep])
    counts = torch.tensor(dm.class_counts["train"], dtype=torch.float)
    weights = dm.class_weights()
    torch.testing.assert_close(weights * counts, torch.full((7,), counts.sum() / 7))
    torch.manual_seed(0)
    _, sampled = next(iter(dm.train_dataloader()))
    share_disgust = (sampled == 1).float().mean().item()
    assert 0.08 < share_disgust < 0.22  # ~1/7 once re-weighted, versus ~0.016 in the raw split


def test_synthetic_data_is_deterministic_and_labelled_synthetic() -> None:
    a, la = make_synthetic_faces(70, seed=5)
    b, lb = make_synthetic_faces(70, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.dtype == np.uint8 and a.shape == (70, 48, 48) and np.bincount(la).tolist() == [10] * 7
    dm = SyntheticFERDataModule(train_transform=_eval(), eval_transform=_eval(), num_train=70, num_val=14,
                                num_test=14)
    dm.setup()
    assert dm.describe()["synthetic"] is True and dm.describe()["dataset"] == "synthetic"
    assert "synthetic" in dm.val_source and "PublicTest" not in dm.val_source


def test_the_source_is_read_once_across_fit_validate_and_test(tiny_fer: TinyFER, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import fer_lightning.data.datamodule as datamodule_module

    reads = []
    monkeypatch.setattr(datamodule_module, "load_or_build",
                        lambda source, cache_dir, build, **_: reads.append(source) or build())
    dm = _dm(tiny_fer.zip, tmp_path / "c")
    for stage in ("fit", "validate", "test"):  # what train() drives through Lightning
        dm.prepare_data()
        dm.setup(stage)
    assert len(reads) == 1
    assert dm._arrays is None  # the full arrays are not kept twice in memory


# --- data.num_workers: an int, or auto from the usable cores ------------------------------------------------

def _cores(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (4, 0), (5, 2), (8, 4), (12, 6), (16, 8), (96, 8)])
def test_auto_workers_load_in_process_on_few_cores_and_use_half_of_many(monkeypatch: pytest.MonkeyPatch,
                                                                        cores: int, workers: int) -> None:
    _cores(monkeypatch, cores)
    assert auto_num_workers(cores) == workers
    assert auto_num_workers() == workers and resolve_num_workers("auto") == workers


def test_usable_cores_is_the_affinity_mask_else_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    _cores(monkeypatch, 3)  # e.g. a SLURM job granted 3 cores of a 64-core node
    assert usable_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows
    assert usable_cores() == 64 and auto_num_workers() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1


@pytest.mark.parametrize("value", [-1, "many", "", True, 1.5, None])
def test_bad_num_workers_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(DataConfigError, match=r"data.num_workers=.* is not allowed; .*auto") as err:
        resolve_num_workers(value)  # type: ignore[arg-type]
    assert isinstance(err.value, FERLightningError) and isinstance(err.value, ValueError)


def test_explicit_num_workers_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    _cores(monkeypatch, 2)
    assert [resolve_num_workers(v) for v in (0, 1, 3, "2", " AUTO ")] == [0, 1, 3, 2, 0]


@pytest.mark.parametrize(("cores", "workers"), [(2, 0), (16, 8)])
def test_datamodule_resolves_auto_for_its_loaders_and_records_it(tiny_fer: TinyFER, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, cores: int,
                                                                 workers: int) -> None:
    _cores(monkeypatch, cores)
    dm = FER2013DataModule(root=str(tiny_fer.zip), train_transform=_eval(), eval_transform=_eval(), batch_size=8,
                           num_workers="auto", persistent_workers=True, cache=False)
    assert dm.num_workers == workers and dm.num_workers_setting == "auto"
    assert dm.persistent_workers is (workers > 0)  # torch refuses persistent workers without workers
    dm.setup("fit")
    assert dm.train_dataloader().num_workers == workers and dm.val_dataloader().num_workers == workers
    assert dm.describe()["num_workers"] == workers


def test_real_data_config_defaults_to_auto_and_synthetic_stays_in_process(tiny_fer: TinyFER, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import compose_train_cfg
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "data"
    assert OmegaConf.load(conf / "fer2013.yaml").num_workers == "auto"
    assert OmegaConf.load(conf / "synthetic.yaml").num_workers == 0
    _cores(monkeypatch, 2)
    cfg = compose_train_cfg(tmp_path / "run", ["data=fer2013", f"data.root={tiny_fer.zip}"])
    assert instantiate(cfg.data).num_workers == 0
    cfg = compose_train_cfg(tmp_path / "run2", ["data=fer2013", f"data.root={tiny_fer.zip}", "data.num_workers=3"])
    assert instantiate(cfg.data).num_workers == 3
