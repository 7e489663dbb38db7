"""Shared fixtures: a tiny FER2013 generated in every form (folder, zip, CSV) from the same pixels."""

from __future__ import annotations

import csv
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import DictConfig

import fer_lightning  # noqa: F401  (resolvers)
from fer_lightning.config import compose_config
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
    return compose_config("train", overrides, output_dir)


def real_fer2013_root() -> str | None:
    root = os.environ.get("FER2013_ROOT")
    return root if root and Path(root).exists() else None


requires_fer2013 = pytest.mark.skipif(
    real_fer2013_root() is None, reason="FER2013_ROOT is not set (real FER2013 not available)"
)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- Inference fixtures -------------------------------------------------------------------------------------

YUNET_ENV = "FER_LIGHTNING_YUNET_MODEL"  # a user's own YuNet file; by default the package's copy is used


def yunet_model_file() -> str | None:
    """$FER_LIGHTNING_YUNET_MODEL when set, else the YuNet model shipped in the package (None if it is missing)."""
    from fer_lightning.assets import YUNET_MODEL_FILE

    path = os.environ.get(YUNET_ENV)
    if path and Path(path).is_file():
        return path
    return str(YUNET_MODEL_FILE) if YUNET_MODEL_FILE.is_file() else None


requires_yunet = pytest.mark.skipif(
    yunet_model_file() is None, reason=f"the packaged YuNet model is missing and {YUNET_ENV} is not set"
)


def make_face_video(path: Path, frames: int = 24, fps: float = 12.0, size: tuple[int, int] = (640, 480),
                    blank_from: int | None = None) -> Path:
    """A short 640x480 video of the photo sliding sideways; frames from ``blank_from`` on have no face."""
    photo = cv2.resize(face_photo(), (400, 400), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        if blank_from is None or i < blank_from:
            x = 20 + 4 * i
            frame[40:440, x:x + 400] = photo
        writer.write(frame)
    writer.release()
    return path


def face_photo() -> np.ndarray:
    """A real photo with one frontal face (BGR, 512x512): scikit-image's public-domain NASA astronaut portrait.

    Both Haar and YuNet find the face at about (178, 63, 90, 113); it is the only face in the picture.
    """
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_crop() -> np.ndarray:
    """The astronaut's face alone, about 150x150 BGR, for the "input is already a face crop" path."""
    return face_photo()[40:190, 150:300].copy()


@dataclass
class TrainedRun:
    checkpoint: Path
    datamodule: object  # the SyntheticFERDataModule the model was trained and tested with
    model: object  # the trained FERClassifier as `train` left it


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A real compact-CNN run by `train` (2 epochs on synthetic faces, no logger), for the inference tests."""
    from fer_lightning.train import train

    out = tmp_path_factory.mktemp("inference_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_LIGHTNING_CACHE", str(out / "cache"))
        cfg = compose_train_cfg(out, [
            "data=synthetic", "+experiment=compact_cnn", "trainer.max_epochs=2", "trainer.accelerator=cpu",
            "data.num_train=700", "data.num_val=140", "data.num_test=140", "logger=none",
            "callbacks.progress_bar=null", "seed=3",
        ])
        metrics, objects = train(cfg)
    return TrainedRun(Path(metrics["best_ckpt_path"]), objects["datamodule"], objects["model"])


@pytest.fixture(scope="session")
def trained_checkpoint(trained_run: TrainedRun) -> Path:
    return trained_run.checkpoint


@pytest.fixture(autouse=True)
def _own_wandb_service_per_test() -> Iterator[None]:
    """An in-process W&B run leaves `WANDB_SERVICE` in os.environ; subprocesses of later tests (killed and resumed
    runs) would then share this process's W&B service and collide on run ids. Each test ends with its own torn down."""
    yield
    if "wandb" in sys.modules and os.environ.get("WANDB_SERVICE"):
        import wandb

        wandb.teardown()
        os.environ.pop("WANDB_SERVICE", None)


def load_experiment_script(relative: str, name: str | None = None):
    """An `experiments/` script imported as a module (they are scripts, not a package), registered under `name`
    (its file stem by default) so that its dataclasses can find their module."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name or path.stem] = module
    spec.loader.exec_module(module)
    return module
