"""Emotion classifiers behind one small interface: a PyTorch checkpoint or an exported ONNX file.

The recogniser only needs class names, the evaluation transform and ``predict_proba``; keeping torch behind that
interface is what lets the onnxruntime path run on a machine without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_lightning.inference.base import EmotionClassifier, softmax
from fer_lightning.preprocessing import Transform

__all__ = ["EmotionClassifier", "TorchEmotionClassifier", "load_classifier", "softmax"]


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
                 device: str = "cpu", threads: int | None = None, checkpoint_meta: Any = None) -> None:
        import torch

        self.checkpoint_meta = checkpoint_meta  # a fer_lightning.checkpoints.CheckpointMeta when read from a file
        self.threads = threads
        self.model = model.to(device).eval()
        self.class_names = tuple(class_names)
        self.eval_transform = eval_transform
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu",
                        threads: int | None = None) -> TorchEmotionClassifier:
        """``threads``: torch CPU threads while this classifier runs (restored after each call; None = unchanged).

        The file is first read with ``weights_only=True`` (:func:`~fer_lightning.checkpoints.read_checkpoint_meta`):
        a file that is no checkpoint, or that would run code when unpickled, is refused there with its path,
        before Lightning loads it.
        """
        from fer_lightning.checkpoints import CheckpointError, read_checkpoint_meta, safe_checkpoint_globals
        from fer_lightning.models.module import FERClassifier

        meta = read_checkpoint_meta(path)
        if len(meta.class_names) != meta.num_classes:
            raise CheckpointError(f"{meta.path} names {len(meta.class_names)} classes {list(meta.class_names)} for a "
                                  f"network with {meta.num_classes} outputs: the checkpoint is inconsistent; "
                                  "re-save it from its training run")
        try:
            with safe_checkpoint_globals():  # hyperparameters from a config are OmegaConf containers
                model = FERClassifier.from_checkpoint(meta.path, map_location="cpu")
        except RuntimeError as err:  # state_dict shapes that disagree with the hyperparameters
            first = str(err).strip().splitlines()
            raise CheckpointError(f"{meta.path}: its weights do not fit the network its hyperparameters describe "
                                  f"({meta.describe()}): {' '.join(first[:2])[:300]}") from err
        hp = model.hparams
        transform = eval_transform_from_metadata(meta.extras, hp.input_size, hp.input_mean, hp.input_std)
        return cls(model, meta.class_names, transform, device=device, threads=threads, checkpoint_meta=meta)

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


def load_classifier(path: str | Path, device: str = "cpu", threads: int | None = None,
                    class_names: Sequence[str] | None = None) -> EmotionClassifier:
    """A classifier for a ``.ckpt`` (PyTorch) or ``.onnx`` (onnxruntime, no torch needed) file.

    Any class set works: the model file carries its class names and every output is labelled with them. Pass
    ``class_names`` (e.g. ``EMOTIONS``) where the caller needs exactly those classes, in that order (scoring
    against FER2013 labels); a model with others is refused with its path instead of mis-scored.
    ``threads``: CPU threads for the classifier (None = the runtime's default, all cores).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    classifier: EmotionClassifier
    if path.suffix.lower() == ".onnx":
        from fer_lightning.inference.onnx_runtime import OnnxEmotionClassifier

        classifier = OnnxEmotionClassifier(path, intra_op_num_threads=threads)
        _check_onnx_outputs(classifier, path)
    else:
        classifier = TorchEmotionClassifier.from_checkpoint(path, device=device, threads=threads)
    if class_names is not None:
        from fer_lightning.checkpoints import check_class_names

        check_class_names(classifier.class_names, class_names, str(path))
    return classifier


def _check_onnx_outputs(classifier: Any, path: Path) -> None:
    """The metadata's class names must label the network's outputs one to one (a hand-edited file may not)."""
    shape = classifier.session.get_outputs()[0].shape
    outputs = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    if outputs is not None and outputs != len(classifier.class_names):
        raise ValueError(f"{path} has {outputs} outputs but its metadata names {len(classifier.class_names)} classes "
                         f"{list(classifier.class_names)}: re-export it from its checkpoint "
                         "(python -m fer_lightning.export ckpt_path=...)")
