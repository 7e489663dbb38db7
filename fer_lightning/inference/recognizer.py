"""The emotion finder's API: faces in, one record per face out, with the model's exact training preprocessing.

The three classic steps are kept apart: a pluggable face detector, the FER2013-style face crop (grayscale,
squared, 48x48; :mod:`fer_lightning.preprocessing`), and the classifier (PyTorch checkpoint or ONNX file). All
faces of a frame are classified in one batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_lightning.inference.base import EmotionClassifier
from fer_lightning.inference.classifier import load_classifier
from fer_lightning.inference.detectors import Detection, DetectorUnavailable, FaceDetector, create_detector
from fer_lightning.preprocessing import face_to_fer, prepare_face

DEFAULT_MARGIN = 0.0  # measured: experiments/inference/README.md, "Crop framing"
# Measured on PublicTest faces re-detected by YuNet: +0.74 points (+0.87 with heads rolled up to 20 degrees), and
# +2.08 on rolled CK+ dev faces (experiments/cross_dataset/README.md, "Face alignment"). No effect without eyes.
DEFAULT_ALIGN = True


@dataclass(frozen=True)
class FaceRecord:
    """One classified face: where it is, how sure the detector was, and the emotion probabilities.

    In a video or webcam stream (`fer_lightning.inference.tracking`) a face also gets the id of its track and the
    track's probabilities smoothed over time; `probs` and `label` stay this frame's own.
    """

    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the input image
    score: float  # detector confidence (1.0 for caller-given boxes and whole-image faces)
    probs: dict[str, float]  # every class, in the model's class order
    track_id: int | None = None  # the same face across frames (video and webcam); None for photos
    smoothed_probs: dict[str, float] | None = None  # the track's probabilities smoothed over time
    label: str = field(init=False)
    smoothed_label: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", max(self.probs, key=self.probs.__getitem__))
        smoothed = self.smoothed_probs
        object.__setattr__(self, "smoothed_label", max(smoothed, key=smoothed.__getitem__) if smoothed else None)

    @property
    def confidence(self) -> float:
        return self.probs[self.label]

    @property
    def shown_label(self) -> str:
        """What a person should see: the smoothed label where there is one, else this frame's."""
        return self.smoothed_label or self.label

    @property
    def shown_confidence(self) -> float:
        return self.smoothed_probs[self.shown_label] if self.smoothed_probs else self.confidence

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"box": list(self.box), "score": round(float(self.score), 6), "label": self.label,
                                  "probs": {name: round(float(p), 6) for name, p in self.probs.items()}}
        if self.track_id is not None:
            record["track_id"] = self.track_id
        if self.smoothed_probs is not None:
            record["smoothed_label"] = self.smoothed_label
            record["smoothed_probs"] = {name: round(float(p), 6) for name, p in self.smoothed_probs.items()}
        return record


def shipped_model_path(kind: str = "ckpt") -> Path:
    """The small FER2013 model that ships inside the package (see fer_lightning/assets/MODEL_CARD.md)."""
    from fer_lightning.assets import shipped_model_file

    return shipped_model_file(kind)


class EmotionRecognizer:
    """Detect faces, crop them as FER2013 frames its faces, and classify all of a frame's faces in one batch.

    Detectors: ``"yunet"`` (OpenCV's YuNet CNN, its model shipped in the package), ``"haar"`` (OpenCV's Haar
    cascade), ``"none"`` (every image is one face) or ``"auto"`` (YuNet; Haar, with a warning, only in an
    installation that lacks the YuNet model and cannot download it), or any object with a
    ``detect(image) -> list[Detection]`` method.

    Options:
    - ``min_face_size``: ignore detections whose shorter side is below this many pixels (0 keeps all).
    - ``largest_only``: keep only the largest face of each image (e.g. a webcam user in front of a crowd).
    - ``margin``: widen the face box, squared on its longer side, by this fraction per side before cropping.
      The default 0 is measured, not guessed: re-detected FER2013 faces are classified most like the originals
      with the squared box alone (experiments/inference/README.md, "Crop framing").
    - ``align``: rotate each face upright about its box centre so its eyes are level, where the detector gives eye
      landmarks (YuNet does; Haar and ``none`` do not, and their faces are cropped unrotated). On by default: it
      was chosen on PublicTest (experiments/cross_dataset/README.md, "Face alignment").
    """

    def __init__(self, classifier: EmotionClassifier, detector: str | FaceDetector = "auto",
                 min_face_size: int = 0, largest_only: bool = False, margin: float = DEFAULT_MARGIN,
                 detector_options: dict[str, Any] | None = None, align: bool = DEFAULT_ALIGN) -> None:
        if min_face_size < 0:
            raise ValueError(f"min_face_size must be >= 0, got {min_face_size}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.classifier = classifier
        self.detector = _make_detector(detector, detector_options or {})
        self.min_face_size = min_face_size
        self.largest_only = largest_only
        self.margin = margin
        self.align = align

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, detector: str | FaceDetector = "auto",
                        device: str = "cpu", threads: int | None = 1, **options: Any) -> EmotionRecognizer:
        """A recogniser for a ``.ckpt`` (PyTorch) or ``.onnx`` (onnxruntime) model.

        ``None`` is the model shipped with the package, run through onnxruntime (same probabilities as its
        checkpoint, see MODEL_CARD.md, and no torch import, so start-up takes about a second).

        ``threads=1`` runs the classifier on one CPU thread. With few faces per frame that is the fastest end to
        end: the detector's threads keep the other cores, and a 640x480 frame took 6.8 ms instead of 10.9 ms on
        2 cores (experiments/inference/README.md). ``None`` gives the runtime every core (for large batches).
        For a ``.ckpt``, torch's process-wide thread count is set for each call and restored after it.
        """
        model_path = shipped_model_path("onnx") if path is None else Path(path)
        return cls(load_classifier(model_path, device=device, threads=threads), detector=detector, **options)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The detector's faces after the size filter and the largest-only rule."""
        faces = [d for d in self.detector.detect(image) if min(d.box[2], d.box[3]) >= self.min_face_size]
        if self.largest_only and faces:
            faces = [max(faces, key=lambda d: d.box[2] * d.box[3])]
        return faces

    def predict(self, image: np.ndarray, boxes: Sequence[Sequence[float]] | None = None,
                face_crop: bool = False) -> list[FaceRecord]:
        """One record per face in ``image`` (uint8 BGR, BGRA or gray, as OpenCV reads it).

        ``boxes``: faces the caller already has, as (x, y, w, h); the detector is skipped. ``face_crop=True``: the
        image is itself one face (e.g. a FER2013 image), classified whole. No face found gives an empty list.
        """
        if face_crop and boxes is not None:
            raise ValueError("pass either boxes or face_crop=True, not both")
        _check_image(image)
        height, width = image.shape[:2]
        if face_crop:
            detections = [Detection(box=(0, 0, width, height), score=1.0)]
        elif boxes is not None:
            detections = [Detection(box=_check_box(b, width, height), score=1.0) for b in boxes]
        else:
            detections = self.detect(image)
        if not detections:
            return []
        margin = 0.0 if face_crop else self.margin
        faces = [face_to_fer(image, None if face_crop else d.box, margin, d.eyes if self.align else None)
                 for d in detections]
        probs = self.predict_faces(faces)
        return [FaceRecord(box=d.box, score=float(d.score), probs=dict(zip(self.class_names, p.tolist())))
                for d, p in zip(detections, probs)]

    def predict_faces(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """(N, num_classes) probabilities for uint8 48x48 grayscale faces, in one batch."""
        if not faces:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        batch = np.stack([prepare_face(face, self.classifier.eval_transform) for face in faces])
        return self.classifier.predict_proba(batch)


def _make_detector(detector: str | FaceDetector, options: dict[str, Any]) -> FaceDetector:
    """``auto``: YuNet (more accurate, finds turned and small faces; shipped in the package), else Haar."""
    if detector != "auto":
        return create_detector(detector, **options)
    try:
        return create_detector("yunet", **options)
    except DetectorUnavailable as err:
        warnings.warn(f"{err}\nFalling back to the Haar cascade detector.", stacklevel=3)
        return create_detector("haar")


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image (as cv2.imread returns), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an HxW gray, HxWx3 BGR or HxWx4 BGRA image, got shape {image.shape}")


def _check_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    if len(box) != 4:
        raise ValueError(f"a face box is (x, y, w, h), got {tuple(box)}")
    x, y, w, h = (int(round(float(v))) for v in box)
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {tuple(box)} has no area")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"face box {tuple(box)} lies outside the {width}x{height} image")
    return x, y, w, h
