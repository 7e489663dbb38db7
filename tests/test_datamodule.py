"""The LightningDataModules: splits, batches, imbalance handling, synthetic data."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from conftest import TinyFER, make_tiny_fer

from fer_lightning.data.datamodule import FER2013DataModule, SyntheticFERDataModule
from fer_lightning.data.synthetic import make_synthetic_faces


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
