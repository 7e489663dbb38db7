"""The real FER2013 (skipped unless FER2013_ROOT points at it; CI sets it to ../shared/data/fer2013.zip)."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
from conftest import real_fer2013_root, requires_fer2013

from fer_lightning.data.datamodule import FER2013DataModule

# Official per-class counts in EMOTIONS order (angry, disgust, fear, happy, sad, surprise, neutral).
TRAINING = [3995, 436, 4097, 7215, 4830, 3171, 4965]
PUBLIC_TEST = [467, 56, 496, 895, 653, 415, 607]
PRIVATE_TEST = [491, 55, 528, 879, 594, 416, 626]


@requires_fer2013
def test_official_split_sizes_and_class_counts(tmp_path: Path) -> None:
    transform = A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])
    dm = FER2013DataModule(root=real_fer2013_root(), train_transform=transform, eval_transform=transform,
                           num_workers=0, cache_dir=str(tmp_path))
    dm.setup("fit")
    counts = dm.class_counts
    assert {split: sum(c) for split, c in counts.items()} == {"train": 28709, "val": 3589, "test": 3589}
    assert counts == {"train": TRAINING, "val": PUBLIC_TEST, "test": PRIVATE_TEST}
    assert dm.val_source.startswith("official")
    images = dm.splits["train"][0]
    assert images.shape == (28709, 48, 48) and images.dtype.name == "uint8"
    assert 100 < images.mean() < 150  # real faces, not blank decodes
