"""Test-time augmentation (TTA) and ensembling for trained emotion classifiers.

Views are cut from the uint8 48x48 face *before* the model's own evaluation transform, so every view still goes
through exactly the preprocessing the model was trained to expect (the resize to its input size and its
normalisation, stored in its checkpoint). Works with any :class:`~fer_lightning.inference.classifier.
EmotionClassifier` (a ``.ckpt`` run with PyTorch or an ``.onnx`` file), so an exported or int8 model can be
evaluated with the same TTA as its checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fer_lightning.errors import UsageError
from fer_lightning.inference.base import EmotionClassifier
from fer_lightning.preprocessing import FER_FACE_SIZE, Transform, prepare_face

TTA_MODES: tuple[str, ...] = ("none", "flip", "tencrop")
DEFAULT_CROP_SIZE = 44  # 48 - 4: shifts of up to 4 px, the scale of FER2013's alignment jitter
VIEWS_PER_MODE: dict[str, int] = {"none": 1, "flip": 2, "tencrop": 10}


def check_mode(mode: str) -> str:
    """Fail with the list of modes, so a typo on the command line says what would have worked."""
    if mode not in TTA_MODES:
        raise UsageError(f"unknown TTA mode '{mode}': choose one of {', '.join(TTA_MODES)}")
    return mode


def _iter_transforms(transform: Any) -> Iterator[Any]:
    yield transform
    for child in getattr(transform, "transforms", None) or []:
        yield from _iter_transforms(child)


def eval_center_crop(transform: Transform) -> tuple[int, int] | None:
    """(height, width) of the CenterCrop in a model's eval transform, if it was trained on random crops.

    Such a model has only ever seen crops of that size, so ten-crop TTA should cut views of that size (on which the
    transform's own CenterCrop is then a no-op) rather than the generic 44 px.
    """
    import albumentations as A

    for step in _iter_transforms(transform):
        if isinstance(step, A.CenterCrop):
            return int(step.height), int(step.width)
    return None


def default_crop_size(transform: Transform, face_size: int = FER_FACE_SIZE) -> int:
    """The ten-crop size a model should get: its eval CenterCrop's size, else :data:`DEFAULT_CROP_SIZE`.

    A CenterCrop as large as the face is the "no crop" setting of the transforms config (a no-op), so it does not
    count: such a model gets the generic 44 px crops.
    """
    crop = eval_center_crop(transform)
    return min(crop) if crop and min(crop) < face_size else DEFAULT_CROP_SIZE


def tta_views(face: np.ndarray, mode: str, crop_size: int = DEFAULT_CROP_SIZE) -> list[np.ndarray]:
    """The uint8 views of one face that a TTA mode averages over.

    ``tencrop`` follows the classic ten-crop protocol: the four corner crops and the centre crop (offset rounded
    down, as albumentations' CenterCrop does), then their horizontal mirrors, in that order (views 5-9 are the
    mirrors of views 0-4). ``crop_size`` is used by ``tencrop`` only.
    """
    check_mode(mode)
    if face.ndim != 2:
        raise ValueError(f"expected one grayscale face (H, W), got shape {face.shape}")
    if mode == "none":
        return [face]
    if mode == "flip":
        return [face, np.ascontiguousarray(face[:, ::-1])]
    height, width = face.shape
    if not isinstance(crop_size, (int, np.integer)) or isinstance(crop_size, bool) or crop_size < 1:
        raise ValueError(f"tencrop crop_size must be a positive integer, got {crop_size!r}")
    if crop_size > min(height, width):
        raise ValueError(f"tencrop crop_size {crop_size} is larger than the {width}x{height} face")
    c = int(crop_size)
    top, left = (height - c) // 2, (width - c) // 2
    origins = [(0, 0), (0, width - c), (height - c, 0), (height - c, width - c), (top, left)]
    crops = [np.ascontiguousarray(face[y:y + c, x:x + c]) for y, x in origins]
    return crops + [np.ascontiguousarray(crop[:, ::-1]) for crop in crops]


def transform_for_views(transform: Transform, view_size: int) -> Transform:
    """The model's eval transform for ten-crop views of ``view_size`` px.

    A ten-crop view *is* a crop of the face, standing in for the transform's CenterCrop; a CenterCrop larger than
    the view (e.g. the no-op CenterCrop(48) of a model trained on whole faces) could not crop it again, so it is
    dropped. Everything after it (the resize to the model's input size, the normalisation) is kept, and a
    CenterCrop no larger than the view is kept too (a no-op on views of its own size).
    """
    import albumentations as A

    steps = list(getattr(transform, "transforms", None) or [])
    too_large = [t for t in steps if isinstance(t, A.CenterCrop) and max(int(t.height), int(t.width)) > view_size]
    if not too_large:
        return transform
    return A.Compose([t for t in steps if not any(t is big for big in too_large)])


def predict_proba_tta(classifier: EmotionClassifier, faces: np.ndarray, mode: str = "none",
                      crop_size: int | None = None, batch_size: int = 512) -> np.ndarray:
    """(N, num_classes) class probabilities for uint8 faces (N, H, W), averaged over the mode's views.

    Softmax *probabilities* are averaged, not logits: a view (or, in :func:`ensemble_proba`, a model) with
    larger-scaled logits would otherwise dominate the mean, so models of different calibration combine fairly.
    ``crop_size`` (``tencrop`` only): None takes the size of the CenterCrop in the model's eval transform, else
    44 px (see :func:`default_crop_size`, :func:`transform_for_views`). ``batch_size`` bounds the number of
    prepared views per forward pass, so memory stays flat however many faces and views there are.
    """
    check_mode(mode)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 3:
        raise ValueError(f"faces must be uint8 (N, H, W), got {faces.dtype} {faces.shape}")
    transform = classifier.eval_transform
    crop = DEFAULT_CROP_SIZE
    if mode == "tencrop":
        crop = default_crop_size(transform, min(faces.shape[1:])) if crop_size is None else crop_size
        transform = transform_for_views(transform, crop)
    num_views = VIEWS_PER_MODE[mode]
    faces_per_batch = max(1, batch_size // num_views)
    out = np.empty((len(faces), len(classifier.class_names)), dtype=np.float32)
    for start in range(0, len(faces), faces_per_batch):
        chunk = faces[start:start + faces_per_batch]
        prepared = np.stack([prepare_face(view, transform) for face in chunk for view in tta_views(face, mode, crop)])
        probs = np.asarray(classifier.predict_proba(prepared), dtype=np.float64)
        out[start:start + len(chunk)] = probs.reshape(len(chunk), num_views, -1).mean(axis=1)
    return out


def check_class_names(class_names: Sequence[Sequence[str]], sources: Sequence[str]) -> tuple[str, ...]:
    """The class names all models share; averaging is meaningless if column k is not the same class everywhere."""
    if len(class_names) != len(sources):
        raise ValueError(f"{len(class_names)} class-name lists for {len(sources)} models")
    reference = tuple(class_names[0])
    for names, source in zip(class_names[1:], sources[1:]):
        if tuple(names) != reference:
            raise ValueError(
                f"cannot ensemble models with different classes: {sources[0]} has {list(reference)}, "
                f"{source} has {list(names)}"
            )
    return reference


def ensemble_proba(probs: Sequence[np.ndarray], class_names: Sequence[Sequence[str]] | None = None,
                   sources: Sequence[str] | None = None) -> np.ndarray:
    """Mean of several models' (N, num_classes) probabilities for the same faces, in the same order.

    Averaging is only meaningful when column k means the same class in every model, so differing ``class_names``
    (one sequence per model) are an error naming the ``sources`` (e.g. checkpoint paths) that disagree.
    """
    if len(probs) == 0:
        raise ValueError("ensemble_proba needs at least one array of probabilities")
    sources = list(sources) if sources is not None else [f"model {i}" for i in range(len(probs))]
    if len(sources) != len(probs):
        raise ValueError(f"{len(sources)} sources named for {len(probs)} probability arrays")
    if class_names is not None:
        check_class_names(class_names, sources)
    arrays = [np.asarray(p) for p in probs]
    for array, source in zip(arrays, sources):
        if array.ndim != 2 or array.shape != arrays[0].shape:
            raise ValueError(
                f"probabilities of {source} have shape {array.shape}, {sources[0]}'s have {arrays[0].shape}: "
                "ensembled models must score the same faces over the same classes"
            )
    return np.mean(np.stack(arrays).astype(np.float64), axis=0).astype(np.float32)
