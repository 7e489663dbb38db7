"""Emotion classifiers behind one small interface: a PyTorch checkpoint or an exported ONNX file.

The recogniser only needs class names, the evaluation transform and ``predict_proba``; keeping torch behind that
interface is what lets the onnxruntime path run on a machine without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fer_lightning.preprocessing import Transform


@runtime_checkable
class EmotionClassifier(Protocol):
    """What the recogniser needs from a model."""

    class_names: tuple[str, ...]
    eval_transform: Transform

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 prepared faces -> (N, num_classes) float32 probabilities."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def eval_transform_from_metadata(meta: dict[str, Any], input_size: int, mean: float, std: float) -> Transform:
    """The evaluation pipeline stored with the model, or Resize + Normalize rebuilt from the model's hparams.

    Checkpoints written by ``train`` always store the pipeline; the fallback covers checkpoints saved without a
    datamodule (e.g. by hand), whose eval pipeline is by construction Resize + Normalize.
    """
    import albumentations as A

    if meta.get("eval_transform"):
        return A.from_dict(meta["eval_transform"])
    return A.Compose([
        A.Resize(height=input_size, width=input_size),
        A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
    ])


class TorchEmotionClassifier:
    """A trained :class:`~fer_lightning.models.module.FERClassifier` checkpoint, run with PyTorch."""

    def __init__(self, model: Any, class_names: tuple[str, ...], eval_transform: Transform,
                 device: str = "cpu", threads: int | None = None) -> None:
        import torch

        self.threads = threads
        self.model = model.to(device).eval()
        self.class_names = tuple(class_names)
        self.eval_transform = eval_transform
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu",
                        threads: int | None = None) -> TorchEmotionClassifier:
        """``threads``: torch CPU threads while this classifier runs (restored after each call; None = unchanged)."""
        import torch

        from fer_lightning.models.module import FERClassifier

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        meta = checkpoint.get("fer_lightning", {})
        model = FERClassifier.from_checkpoint(path, map_location="cpu")
        hp = model.hparams
        transform = eval_transform_from_metadata(meta, hp.input_size, hp.input_mean, hp.input_std)
        return cls(model, tuple(meta.get("class_names", model.class_names)), transform, device=device, threads=threads)

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        import torch

        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        previous = torch.get_num_threads()
        if self.threads is not None and self.threads != previous:
            torch.set_num_threads(self.threads)  # process-wide in torch, so it is restored below
        try:
            with torch.inference_mode():
                logits = self.model(torch.from_numpy(np.ascontiguousarray(faces, dtype=np.float32)).to(self.device))
                return torch.softmax(logits.float(), dim=1).cpu().numpy()
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)


def load_classifier(path: str | Path, device: str = "cpu", threads: int | None = None) -> EmotionClassifier:
    """A classifier for a ``.ckpt`` (PyTorch) or ``.onnx`` (onnxruntime, no torch needed) file.

    ``threads``: CPU threads for the classifier (None = the runtime's default, all cores).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        from fer_lightning.inference.onnx_runtime import OnnxEmotionClassifier

        return OnnxEmotionClassifier(path, intra_op_num_threads=threads)
    return TorchEmotionClassifier.from_checkpoint(path, device=device, threads=threads)
