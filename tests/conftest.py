"""Shared fixtures: a tiny FER2013 generated in every form (folder, zip, CSV) from the same pixels."""

from __future__ import annotations

import csv
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import fer_lightning  # noqa: F401  (resolvers)
from fer_lightning.labels import EMOTIONS, SPLIT_NAMES

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FOLDER_FOR_SPLIT = {"train": "train", "val": "test", "test": "test"}
PREFIX_FOR_SPLIT = {"train": "Training_", "val": "PublicTest_", "test": "PrivateTest_"}
USAGE_FOR_SPLIT = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


@dataclass
class TinyFER:
    folder: Path
    zip: Path
    csv: Path
    images: dict[str, np.ndarray]  # split -> (N, 48, 48)
    labels: dict[str, np.ndarray]  # split -> (N,)


def make_tiny_fer(root: Path, per_class: dict[str, int] | None = None, seed: int = 0,
                  prefixes: bool = True) -> TinyFER:
    """Random faces written as PNG (lossless, so every form decodes to identical pixels)."""
    per_class = per_class or {"train": 4, "val": 2, "test": 2}
    rng = np.random.default_rng(seed)
    folder, rows = root / "fer_folder", []
    images: dict[str, list[np.ndarray]] = {s: [] for s in SPLIT_NAMES}
    labels: dict[str, list[int]] = {s: [] for s in SPLIT_NAMES}
    uid = 0
    for split in SPLIT_NAMES:
        for label, emotion in enumerate(EMOTIONS):
            for _ in range(per_class[split]):
                uid += 1
                image = rng.integers(0, 256, size=(48, 48), dtype=np.uint8)
                prefix = PREFIX_FOR_SPLIT[split] if prefixes else "img_"
                path = folder / FOLDER_FOR_SPLIT[split] / emotion / f"{prefix}{uid:06d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), image)
                images[split].append(image)
                labels[split].append(label)
                rows.append((label, " ".join(map(str, image.ravel())), USAGE_FOR_SPLIT[split]))
    order = rng.permutation(len(rows))  # the CSV is not grouped by class, like the real one
    csv_path = root / "fer2013.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(rows[i] for i in order)
    zip_path = root / "fer2013.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder).as_posix())
    return TinyFER(
        folder=folder, zip=zip_path, csv=csv_path,
        images={s: np.stack(v) for s, v in images.items()},
        labels={s: np.array(v) for s, v in labels.items()},
    )


@pytest.fixture
def tiny_fer(tmp_path: Path) -> TinyFER:
    return make_tiny_fer(tmp_path)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the user's cache or W&B account, or goes to the internet for weights."""
    monkeypatch.setenv("FER_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def compose_train_cfg(output_dir: Path, overrides: list[str]) -> DictConfig:
    """The config `python -m fer_lightning` would build, with the run dir pinned to `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # lets ${hydra:...} interpolations resolve outside an app
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]  # as in a Hydra app, the job's config does not carry the `hydra` node
    return cfg


def real_fer2013_root() -> str | None:
    root = os.environ.get("FER2013_ROOT")
    return root if root and Path(root).exists() else None


requires_fer2013 = pytest.mark.skipif(
    real_fer2013_root() is None, reason="FER2013_ROOT is not set (real FER2013 not available)"
)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
