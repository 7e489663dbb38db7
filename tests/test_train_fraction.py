"""`data.train_fraction`: a stratified, seeded, nested share of the training split, for data-efficiency curves.

A point of such a curve is only comparable to the next if the smaller training set keeps the class balance (so the
curve measures data, not imbalance), if 5% lies inside 10% (so the curve adds data rather than swapping it), if it
is the same subset on every rerun, and if validation and test stay whole (so every point is scored on the same
faces). Everything here runs on synthetic faces or a tiny generated FER2013: no training.
"""

from __future__ import annotations

import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from conftest import compose_train_cfg, make_tiny_fer
from hydra.utils import instantiate

from fer_lightning.data.datamodule import (
    DataConfigError,
    FER2013DataModule,
    FERDataModule,
    SyntheticFERDataModule,
    stratified_subset,
)
from fer_lightning.errors import FERLightningError

# FER2013-like imbalance (happy most, disgust fewest), small enough to check every class exactly
COUNTS = [99, 11, 103, 180, 121, 80, 125]
FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)


def _labels(seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    return np.random.default_rng(seed).permutation(labels)  # classes interleaved, as a real split lists them


def _eval() -> A.Compose:
    return A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])


def _synthetic(**kwargs: object) -> SyntheticFERDataModule:
    return SyntheticFERDataModule(train_transform=_eval(), eval_transform=_eval(), num_train=700, num_val=70,
                                  num_test=70, seed=0, num_workers=0, **kwargs)


def _setup(dm: FERDataModule) -> FERDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _rows(images: np.ndarray) -> set[bytes]:
    """Faces as hashable rows: which faces a split holds, whatever their order."""
    return {image.tobytes() for image in images}


# --- stratified_subset --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", FRACTIONS)
def test_every_class_keeps_its_share_within_rounding(fraction: float) -> None:
    labels = _labels()
    keep = stratified_subset(labels, fraction, seed=42)
    assert keep.dtype.kind == "i" and np.all(np.diff(keep) > 0)  # sorted indices, each face at most once
    kept = np.bincount(labels[keep], minlength=len(COUNTS))
    for cls, (n, k) in enumerate(zip(COUNTS, kept)):
        assert k == max(1, round(fraction * n)), (cls, n, k)
        assert abs(k - fraction * n) <= 0.5 or k == 1  # within rounding; a class never vanishes
    if fraction == 1.0:
        np.testing.assert_array_equal(keep, np.arange(len(labels)))


def test_a_tiny_fraction_still_keeps_one_face_of_every_class() -> None:
    labels = _labels()
    keep = stratified_subset(labels, 0.001, seed=0)
    assert np.bincount(labels[keep]).tolist() == [1] * len(COUNTS)


def test_smaller_fractions_lie_inside_larger_ones() -> None:
    labels = _labels()
    for seed in (0, 42):
        subsets = [set(stratified_subset(labels, f, seed).tolist()) for f in FRACTIONS]
        for smaller, larger in zip(subsets, subsets[1:]):
            assert smaller < larger, seed


def test_the_subset_is_reproducible_from_the_seed_and_changes_with_it() -> None:
    labels = _labels()
    first = stratified_subset(labels, 0.1, seed=42)
    np.testing.assert_array_equal(first, stratified_subset(labels.copy(), 0.1, seed=42))
    assert not np.array_equal(first, stratified_subset(labels, 0.1, seed=43))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, math.nan])
def test_stratified_subset_refuses_a_fraction_outside_0_1(fraction: float) -> None:
    with pytest.raises(DataConfigError, match=r"data\.train_fraction must be in \(0, 1\]"):
        stratified_subset(_labels(), fraction, seed=0)


# --- The datamodule ---------------------------------------------------------------------------------------------

def test_the_datamodule_trains_on_the_subset_and_keeps_val_and_test_whole() -> None:
    full = _setup(_synthetic())
    part = _setup(_synthetic(train_fraction=0.1))
    assert full.class_counts["train"] == [100] * 7 and part.class_counts["train"] == [10] * 7
    for split in ("val", "test"):
        for full_array, part_array in zip(full.splits[split], part.splits[split]):
            np.testing.assert_array_equal(part_array, full_array)  # same faces, same order
    images, labels = part.splits["train"]
    full_images, full_labels = full.splits["train"]
    keep = stratified_subset(full_labels, 0.1, part.split_seed)  # seeded by data.split_seed
    np.testing.assert_array_equal(images, full_images[keep])
    np.testing.assert_array_equal(labels, full_labels[keep])
    assert part.train_total == full.train_total == 700
    x, y = next(iter(part.train_dataloader()))  # the loader serves the subset
    assert len(part.train_dataloader().dataset) == 70 and x.shape[1:] == (1, 48, 48)


def test_describe_records_the_fraction_and_the_faces_trained_on() -> None:
    described = _setup(_synthetic(train_fraction=0.25)).describe()
    assert described["train_fraction"] == 0.25 and described["train_images"] == 175
    assert described["class_counts"]["train"] == [25] * 7 and sum(described["class_counts"]["val"]) == 70
    full = _setup(_synthetic()).describe()
    assert full["train_fraction"] == 1.0 and full["train_images"] == 700


def test_datamodule_subsets_are_nested_and_the_same_on_every_rerun() -> None:
    five, ten = (_setup(_synthetic(train_fraction=f)).splits["train"][0] for f in (0.05, 0.1))
    assert _rows(five) < _rows(ten)
    np.testing.assert_array_equal(ten, _setup(_synthetic(train_fraction=0.1)).splits["train"][0])
    other_seed = _setup(_synthetic(train_fraction=0.1, split_seed=7)).splits["train"][0]
    assert _rows(other_seed) != _rows(ten)


def test_the_fraction_is_taken_after_a_carved_validation_split(tmp_path: Path) -> None:
    """A source without PublicTest gets its val split carved from Training first: that split must not depend on
    train_fraction (every point of a curve is selected on the same faces), and the subset never takes val faces."""
    tiny = make_tiny_fer(tmp_path, per_class={"train": 10, "val": 2, "test": 2}, prefixes=False)

    def dm(fraction: float) -> FERDataModule:
        return _setup(FER2013DataModule(root=str(tiny.folder), train_transform=_eval(), eval_transform=_eval(),
                                        num_workers=0, cache_dir=str(tmp_path / "cache"), val_fraction=0.2,
                                        train_fraction=fraction))

    full, half = dm(1.0), dm(0.5)
    assert half.class_counts == {"train": [4] * 7, "val": [2] * 7, "test": [4] * 7}
    for split in ("val", "test"):
        np.testing.assert_array_equal(half.splits[split][0], full.splits[split][0])
    assert _rows(half.splits["train"][0]) < _rows(full.splits["train"][0])
    assert not _rows(half.splits["train"][0]) & _rows(half.splits["val"][0])


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.5, 2, math.nan, "half", True, None])
def test_a_bad_fraction_is_refused_at_construction_naming_the_key(value: object, tmp_path: Path) -> None:
    # no data is read: the root does not even exist, yet the error is the fraction's, not "FER2013 not found"
    with pytest.raises(DataConfigError, match=r"data\.train_fraction") as caught:
        FER2013DataModule(root=str(tmp_path / "no_data"), train_transform=_eval(), eval_transform=_eval(),
                          num_workers=0, train_fraction=value)
    assert isinstance(caught.value, FERLightningError)  # a user error: one line on the command line
    with pytest.raises(DataConfigError, match=r"data\.train_fraction"):
        _synthetic(train_fraction=value)


@pytest.mark.parametrize("data", ["synthetic", "fer2013"])
def test_the_config_default_is_the_whole_split_and_an_override_reaches_the_datamodule(data: str,
                                                                                       tmp_path: Path) -> None:
    cfg = compose_train_cfg(tmp_path, [f"data={data}", f"data.root={tmp_path / 'fer'}"] if data == "fer2013"
                            else [f"data={data}"])
    assert cfg.data.train_fraction == 1.0
    override = compose_train_cfg(tmp_path, [f"data={data}", "data.train_fraction=0.3",
                                            *([f"data.root={tmp_path / 'fer'}"] if data == "fer2013" else [])])
    dm = instantiate(override.data, train_transform=_eval(), eval_transform=_eval(), num_workers=0)
    assert dm.train_fraction == 0.3


def test_a_bad_fraction_on_the_command_line_is_one_line_before_any_run_folder(tmp_path: Path) -> None:
    """The preflight constructs the datamodule, so the datamodule's own check speaks, not Hydra's traceback."""
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-m", "fer_lightning", "data=synthetic", "data.train_fraction=0",
                             f"hydra.run.dir={run_dir}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: data.train_fraction must be in (0, 1] (1 = the whole training split), got 0")
    assert not run_dir.exists()
