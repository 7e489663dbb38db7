"""What ships inside the package so the emotion finder works out of the box, offline: the emotion model (see
MODEL_CARD.md) and the YuNet face detector (MIT, see YUNET_LICENSE.txt)."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
SHIPPED_MODEL_STEM = "fer2013_compact_cnn"
SHIPPED_MODEL_KINDS = ("ckpt", "onnx")
YUNET_MODEL_FILE = ASSETS_DIR / "face_detection_yunet.onnx"


def shipped_model_file(kind: str = "ckpt") -> Path:
    """The shipped checkpoint (``ckpt``, PyTorch) or its ONNX export (``onnx``, onnxruntime, no torch)."""
    if kind not in SHIPPED_MODEL_KINDS:
        raise ValueError(f"shipped model kind must be one of {SHIPPED_MODEL_KINDS}, got {kind!r}")
    path = ASSETS_DIR / f"{SHIPPED_MODEL_STEM}.{kind}"
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped model {path} is missing from this installation; reinstall fer_lightning, or pass "
            "ckpt_path=... with your own checkpoint"
        )
    return path
