"""Face detectors behind one small interface: YuNet (default; OpenCV Zoo model run in onnxruntime), Haar, or none.

This module deliberately imports neither torch nor anything that does: the onnxruntime inference path uses it on
machines without torch. Everything here is numpy + OpenCV + the standard library.

Detectors return boxes in the pixel coordinates of the image they were given, whatever resizing they do
internally, so callers can crop the original image directly.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from fer_lightning.assets import YUNET_MODEL_FILE
from fer_lightning.errors import FERLightningError

YUNET_URL = (
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx"
)
YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
YUNET_ENV = "FER_LIGHTNING_YUNET_MODEL"
CACHE_ENV = "FER_LIGHTNING_CACHE"
DOWNLOAD_TIMEOUT_S = 10.0
# OpenCV's YuNet (checked with 4.14) returns garbage (inf coordinates, or a stale "face" with score ~0.95) on a
# blank image when either side is <= 32 px, its largest stride; smaller inputs are padded up to this size.
YUNET_MIN_INPUT = 64

_YUNET_ADVICE = (
    f"Fix: reinstall fer_lightning (it ships the model), pass model_path=... (a local copy of {YUNET_FILENAME}), "
    f"set {YUNET_ENV}=/path/to/model.onnx, or use detector='haar', which needs no model file."
)


class DetectorUnavailable(FERLightningError, RuntimeError):
    """A detector cannot be built on this machine (missing model file, no network, cascade not shipped).

    `reason` says what went wrong and `advice` how to fix it in Python terms; a command line states its own fix
    (its key names differ), so the two are kept apart.
    """

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(f"{reason}. {advice}" if advice else reason)
        self.reason = reason
        self.advice = advice

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable with both parts (multiprocessing, joblib)
        return type(self), (self.reason, self.advice)


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` is (x, y, w, h) in pixels of the input image, already clipped to it.

    ``score`` is the detector's own confidence and is only comparable between detections of the same detector:
    YuNet gives a 0..1 face probability, a Haar cascade gives its unbounded level weight (larger = more
    confident; typically ~1-10 for real faces), and :class:`WholeImageDetector` always gives 1.0.
    """

    box: tuple[int, int, int, int]
    score: float
    # (right eye, left eye) centres in pixels of the input image, as YuNet gives them (the subject's right eye is
    # on the image's left); None for detectors without landmarks. Face alignment levels the line between them.
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None


@runtime_checkable
class FaceDetector(Protocol):
    """What the recogniser needs from a detector; any object with these two members can be passed in."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """uint8 BGR (HxWx3), BGRA (HxWx4) or gray (HxW / HxWx1) image -> faces, most confident first."""
        ...


# --- Image helpers --------------------------------------------------------------------------------------------


def _validate(image: np.ndarray) -> np.ndarray:
    """Reject what OpenCV would otherwise fail on with an opaque assertion deep inside C++."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(
            f"image must be uint8 (0..255, as cv2.imread returns), got dtype {image.dtype} with shape {image.shape}"
        )
    valid_shape = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if not valid_shape:
        raise ValueError(
            f"image must be gray (H, W), (H, W, 1), BGR (H, W, 3) or BGRA (H, W, 4), got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty, got shape {image.shape}")
    return image


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _detection_image(image: np.ndarray, max_side: int | None, upscale: float = 1.0) -> tuple[np.ndarray, float]:
    """The image detection runs on: big photos shrunk to ``max_side`` on their long side (detectors cost ~O(pixels)
    and a 4K frame's faces stay large enough), then enlarged ``upscale`` times (for small faces: a group photo's
    back row; detection then costs about upscale^2 as much).

    Returns the image and the factor that maps original -> detection coordinates. With ``upscale=1`` a small
    image is never enlarged: that would only slow detection down.
    """
    height, width = image.shape[:2]
    longest = max(height, width)
    scale = (max_side / longest if max_side is not None and longest > max_side else 1.0) * upscale
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), scale


def _to_detections(boxes: np.ndarray, scores: np.ndarray, scale: float, shape: tuple[int, ...],
                   eyes: np.ndarray | None = None) -> list[Detection]:
    """Map boxes (and eye points, (N, 4) as x_r, y_r, x_l, y_l) back to original pixels, clip boxes to the image,
    drop empty ones, most confident first."""
    height, width = shape[:2]
    detections = []
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    eye_rows = None if eyes is None else np.asarray(eyes, dtype=np.float64).reshape(-1, 4) / scale
    for i, ((x, y, w, h), score) in enumerate(zip(boxes, np.ravel(scores))):
        if not np.isfinite([x, y, w, h, score]).all():
            continue
        x0 = min(max(round(x / scale), 0), width)
        y0 = min(max(round(y / scale), 0), height)
        x1 = min(max(round((x + w) / scale), 0), width)
        y1 = min(max(round((y + h) / scale), 0), height)
        if x1 > x0 and y1 > y0:
            points = None
            if eye_rows is not None and np.isfinite(eye_rows[i]).all():
                xr, yr, xl, yl = (float(v) for v in eye_rows[i])
                points = ((xr, yr), (xl, yl))
            detections.append(Detection(box=(x0, y0, x1 - x0, y1 - y0), score=float(score), eyes=points))
    return sorted(detections, key=lambda d: d.score, reverse=True)


def _check_max_side(max_side: int | None) -> int | None:
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels or None, got {max_side}")
    return max_side


def _check_upscale(upscale: float) -> float:
    if not 1.0 <= upscale <= 4.0:
        raise ValueError(f"upscale must be between 1 and 4 (detection on the enlarged frame), got {upscale}")
    return float(upscale)


# --- Haar cascade ---------------------------------------------------------------------------------------------


class HaarDetector:
    """OpenCV's Viola-Jones cascade: no model download, but misses tilted/side faces more often than YuNet.

    Histogram equalisation is off by default: it helps on dark, low-contrast frames but raises false positives
    on textured backgrounds, and the cascade was trained on unequalised faces. Turn it on with ``equalize=True``.
    ``min_size`` is in pixels of the input image (it is scaled with the image when ``max_side`` shrinks it; the
    cascade's own 24x24 window remains the floor).
    """

    name = "haar"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 24, max_side: int | None = 1280,
                 equalize: bool = False, upscale: float = 1.0) -> None:
        self.cascade_path = self._resolve(cascade)
        self.classifier = cv2.CascadeClassifier(self.cascade_path)
        if self.classifier.empty():
            raise DetectorUnavailable(
                f"could not load the Haar cascade {self.cascade_path!r}. opencv-python-headless>=5 no longer ships "
                f"the cascade files (this project requires opencv-python-headless<5); pass cascade=/path/to/file.xml "
                f"or use detector='yunet'."
            )
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1 (the pyramid step), got {scale_factor}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self.max_side = _check_max_side(max_side)
        self.upscale = _check_upscale(upscale)
        self.equalize = equalize

    @staticmethod
    def _resolve(cascade: str) -> str:
        """A path that exists is used as is; a bare file name is looked up among the cascades OpenCV ships."""
        if Path(cascade).is_file():
            return str(cascade)
        data = getattr(cv2, "data", None)
        folder = getattr(data, "haarcascades", "") if data is not None else ""
        return str(Path(folder) / cascade) if folder else str(cascade)

    def detect(self, image: np.ndarray) -> list[Detection]:
        image = _validate(image)
        gray, scale = _detection_image(_to_gray(image), self.max_side, self.upscale)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        min_side = max(1, round(self.min_size * scale))
        # outputRejectLevels=True is what makes OpenCV return a confidence (the level weight) per box.
        boxes, _levels, weights = self.classifier.detectMultiScale3(
            np.ascontiguousarray(gray), scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side), outputRejectLevels=True,
        )
        if len(boxes) == 0:
            return []
        return _to_detections(np.asarray(boxes), np.asarray(weights), scale, image.shape)

    def __repr__(self) -> str:
        return (f"HaarDetector(cascade={Path(self.cascade_path).name!r}, scale_factor={self.scale_factor}, "
                f"min_neighbors={self.min_neighbors}, min_size={self.min_size}, max_side={self.max_side}, "
                f"upscale={self.upscale})")


# --- YuNet ----------------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    """Same rule as :func:`fer_lightning.data.cache.default_cache_dir`, repeated to keep this module import-light."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "fer_lightning"))


def _download(url: str, target: Path) -> None:
    """Download to a temporary file beside ``target`` and rename it into place.

    The rename is atomic, so an interrupted download never leaves a truncated file that a later run would trust;
    the file is also checked to load as a YuNet model before it is published.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # The suffix must stay ".onnx": OpenCV picks the model format from the file extension.
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".part.onnx", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 16):
                out.write(chunk)
        try:
            cv2.FaceDetectorYN.create(str(tmp), "", (320, 320))
        except cv2.error as exc:
            raise OSError(f"the downloaded file is not a loadable ONNX model ({exc})") from exc
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# The copy shipped in the package (fer_lightning/assets/YUNET_LICENSE.txt): YuNet works offline on every install.
PACKAGED_YUNET = YUNET_MODEL_FILE


def yunet_model_path(model_path: str | Path | None = None, download: bool = True) -> Path:
    """Where the YuNet ONNX file is.

    Order: explicit ``model_path``; ``$FER_LIGHTNING_YUNET_MODEL``; the copy shipped in the package; then, for an
    installation that lacks it, ``<cache>/models/face_detection_yunet_2023mar.onnx`` (cache =
    ``$FER_LIGHTNING_CACHE`` or ``~/.cache/fer_lightning``), else a download from :data:`YUNET_URL` into it.
    An explicit path or variable that points nowhere is an error rather than a silent fallback, so a typo never
    quietly uses a different model.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {str(path)!r} (given as model_path)")
        return path
    env_value = os.environ.get(YUNET_ENV)
    if env_value:
        path = Path(env_value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{YUNET_ENV} points to {str(path)!r}, which is not a file")
        return path
    if PACKAGED_YUNET.is_file():
        return PACKAGED_YUNET
    cached = _cache_dir() / "models" / YUNET_FILENAME
    if cached.is_file():
        return cached
    if not download:
        raise DetectorUnavailable(
            f"the YuNet face-detection model is missing from this installation ({PACKAGED_YUNET}), is not in the "
            f"cache ({cached}), and download=False", _YUNET_ADVICE)
    try:
        _download(YUNET_URL, cached)
    except Exception as exc:  # noqa: BLE001 - any failure (DNS, TLS, HTTP, timeout, disk) gets the same advice
        raise DetectorUnavailable(
            f"the YuNet face-detection model is missing from this installation ({PACKAGED_YUNET}) and could not be "
            f"downloaded from {YUNET_URL} "
            f"({type(exc).__name__}: {exc})", _YUNET_ADVICE) from exc
    return cached


YUNET_STRIDES = (8, 16, 32)  # the feature maps' strides; inputs are padded to a multiple of the largest
YUNET_RUNTIMES = ("onnxruntime", "opencv")


class YuNetDetector:
    """OpenCV's YuNet CNN (~230 kB ONNX): finds small, tilted and partly occluded faces that Haar misses.

    ``runtime="onnxruntime"`` (default) runs the network in onnxruntime and decodes its outputs here, exactly as
    OpenCV's ``FaceDetectorYN`` does (same padding, scores, boxes, landmarks and NMS): on the 2-core dev CPU the
    network took 4.8 ms per 640x480 frame there against 11.6 ms in OpenCV's DNN module, which made YuNet most of
    the finder's time per frame. ``runtime="opencv"`` keeps ``cv2.FaceDetectorYN``. Not thread-safe: use one
    instance per thread.
    """

    name = "yunet"

    def __init__(self, model_path: str | Path | None = None, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, top_k: int = 5000, max_side: int | None = 1280,
                 download: bool = True, runtime: str = "onnxruntime", upscale: float = 1.0) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if runtime not in YUNET_RUNTIMES:
            raise ValueError(f"runtime must be one of {YUNET_RUNTIMES}, got {runtime!r}")
        self.model_path = yunet_model_path(model_path, download=download)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.max_side = _check_max_side(max_side)
        self.upscale = _check_upscale(upscale)
        self.runtime = runtime
        self._input_size = (320, 320)
        try:
            if runtime == "opencv":
                self._net = cv2.FaceDetectorYN.create(str(self.model_path), "", self._input_size,
                                                      self.score_threshold, self.nms_threshold, self.top_k)
            else:
                self._session, self._input_name = _yunet_session(self.model_path)
        except (cv2.error, ValueError) as exc:
            raise DetectorUnavailable(
                f"{runtime} could not load the YuNet model {str(self.model_path)!r} ({exc})", _YUNET_ADVICE) from exc

    def detect(self, image: np.ndarray) -> list[Detection]:
        image = _validate(image)
        bgr, scale = _detection_image(_to_bgr(image), self.max_side, self.upscale)
        pad_bottom, pad_right = max(0, YUNET_MIN_INPUT - bgr.shape[0]), max(0, YUNET_MIN_INPUT - bgr.shape[1])
        if pad_bottom or pad_right:  # bottom/right only, so box coordinates are unchanged; clipping drops the pad
            bgr = cv2.copyMakeBorder(bgr, 0, pad_bottom, 0, pad_right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        bgr = np.ascontiguousarray(bgr)
        faces = self._detect_opencv(bgr) if self.runtime == "opencv" else self._detect_onnxruntime(bgr)
        if faces is None or len(faces) == 0:
            return []
        # Rows: x, y, w, h, 5 landmarks (x, y: right eye, left eye, nose tip, mouth corners), score.
        return _to_detections(faces[:, :4], faces[:, -1], scale, image.shape, eyes=faces[:, 4:8])

    def _detect_opencv(self, bgr: np.ndarray) -> np.ndarray | None:
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._input_size:
            self._net.setInputSize(size)
            self._input_size = size
        return self._net.detect(bgr)[1]

    def _detect_onnxruntime(self, bgr: np.ndarray) -> np.ndarray:
        divisor = YUNET_STRIDES[-1]
        height, width = bgr.shape[:2]
        pad_height, pad_width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
        blob = np.zeros((1, 3, pad_height, pad_width), dtype=np.float32)  # BGR, 0-255, as cv2.dnn.blobFromImage
        blob[0, :, :height, :width] = bgr.transpose(2, 0, 1)
        outputs = self._session.run(None, {self._input_name: blob})
        return decode_yunet(outputs, (pad_height, pad_width), self.score_threshold, self.nms_threshold, self.top_k)

    def __repr__(self) -> str:
        return (f"YuNetDetector(model_path={str(self.model_path)!r}, score_threshold={self.score_threshold}, "
                f"nms_threshold={self.nms_threshold}, top_k={self.top_k}, max_side={self.max_side}, "
                f"upscale={self.upscale}, runtime={self.runtime!r})")


def _yunet_session(model_path: Path) -> tuple[object, str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Idle worker threads must not spin between frames: they would take the CPU from video decoding and the
    # classifier on the same cores (see EmotionClassifier's onnxruntime session).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable files
        raise ValueError(str(err)) from err
    return session, session.get_inputs()[0].name


def decode_yunet(outputs: list[np.ndarray], padded_shape: tuple[int, int], score_threshold: float,
                 nms_threshold: float, top_k: int) -> np.ndarray:
    """YuNet's raw outputs (cls, obj, bbox, kps for strides 8, 16, 32, in that order) as OpenCV's ``FaceDetectorYN``
    rows: x, y, w, h, 10 landmark coordinates, score; its decoding and NMS (integer boxes), so both runtimes agree."""
    pad_height, pad_width = padded_shape
    rows = []
    count = len(YUNET_STRIDES)
    for i, stride in enumerate(YUNET_STRIDES):
        cls, obj, bbox, kps = (np.asarray(outputs[i + count * k]).reshape(-1, width)
                               for k, width in enumerate((1, 1, 4, 10)))
        score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
        keep = score >= score_threshold
        if not keep.any():
            continue
        cols = pad_width // stride
        index = np.flatnonzero(keep)
        grid = np.stack([index % cols, index // cols], axis=1).astype(np.float32)  # (c, r) of each anchor
        box, points = bbox[keep], kps[keep].reshape(-1, 5, 2)
        centre = (grid + box[:, :2]) * stride
        size = np.exp(box[:, 2:4]) * stride
        landmarks = ((points + grid[:, None, :]) * stride).reshape(-1, 10)
        rows.append(np.concatenate([centre - size / 2, size, landmarks, score[keep, None]], axis=1))
    if not rows:
        return np.zeros((0, 15), dtype=np.float32)
    faces = np.concatenate(rows).astype(np.float32)
    if len(faces) > 1:
        boxes = [[int(x), int(y), int(w), int(h)] for x, y, w, h in faces[:, :4]]
        kept = cv2.dnn.NMSBoxes(boxes, faces[:, -1].tolist(), score_threshold, nms_threshold, 1.0, top_k)
        faces = faces[np.asarray(kept, dtype=int).reshape(-1)]
    return faces


# --- No detection ---------------------------------------------------------------------------------------------


class WholeImageDetector:
    """"The input is already a face": for pre-cropped faces (e.g. FER2013 images) or caller-supplied crops."""

    name = "none"

    def detect(self, image: np.ndarray) -> list[Detection]:
        image = _validate(image)
        return [Detection(box=(0, 0, int(image.shape[1]), int(image.shape[0])), score=1.0)]

    def __repr__(self) -> str:
        return "WholeImageDetector()"


DETECTORS: dict[str, type] = {"yunet": YuNetDetector, "haar": HaarDetector, "none": WholeImageDetector}


def create_detector(detector: str | FaceDetector = "yunet", **options: object) -> FaceDetector:
    """Build a detector by name (what configs and the CLI pass), or pass a ready detector through unchanged."""
    if not isinstance(detector, str):
        if not isinstance(detector, FaceDetector):
            raise TypeError(f"detector must be one of {sorted(DETECTORS)} or a FaceDetector, got {detector!r}")
        if options:
            raise TypeError(f"options {sorted(options)} only apply when the detector is given by name")
        return detector
    key = detector.strip().lower()
    if key not in DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; valid names: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[key](**options)
