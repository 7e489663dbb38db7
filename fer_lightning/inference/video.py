"""Frames from any input the emotion finder takes: a photo, a folder of photos, a video file or a webcam.

Everything streams: a video is decoded one frame at a time and never held in memory, a folder is read one file
at a time. A folder keeps going past files it cannot read and hands them back as :class:`Unreadable` items, so
the caller can report every one of them; a single input that cannot be read fails at once with
:class:`InputError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_lightning.errors import FERLightningError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif"})
WEBCAM_PREFIX = "webcam:"


class InputError(FERLightningError, RuntimeError):
    """The input as a whole cannot be used (missing, unreadable, unknown kind, no camera)."""


@dataclass(frozen=True)
class Frame:
    source: str  # the file it came from, or "webcam:N"
    index: int  # frame index in the source (0 for a photo)
    time_s: float | None  # position in the video or seconds since the webcam opened; None for a photo
    image: np.ndarray  # uint8 BGR (or gray), as OpenCV decodes it


@dataclass(frozen=True)
class Unreadable:
    """A file in a folder that could not be decoded; reported at the end, never silently dropped."""

    source: str
    error: str


@dataclass(frozen=True)
class InputSpec:
    kind: str  # "image" | "folder" | "video" | "webcam"
    path: Path | None
    camera: int | None = None

    @property
    def name(self) -> str:
        return f"{WEBCAM_PREFIX}{self.camera}" if self.kind == "webcam" else str(self.path)


def resolve_input(spec: str | os.PathLike[str]) -> InputSpec:
    """What kind of input ``spec`` is: ``webcam:N``, a folder, a video (by suffix) or an image."""
    text = str(spec)
    if text.startswith(WEBCAM_PREFIX):
        index = text[len(WEBCAM_PREFIX):]
        if not index.isdigit():
            raise InputError(f"webcam input must be 'webcam:N' with a camera number, e.g. webcam:0; got {text!r}")
        return InputSpec("webcam", None, int(index))
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        return InputSpec("folder", path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return InputSpec("video", path)
    if suffix in IMAGE_SUFFIXES:
        return InputSpec("image", path)
    raise InputError(
        f"cannot tell what {path} is from its suffix {suffix!r}: images are {sorted(IMAGE_SUFFIXES)}, "
        f"videos are {sorted(VIDEO_SUFFIXES)}; a folder or webcam:N also work"
    )


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image as BGR (alpha dropped); raises :class:`InputError` naming the file if that fails."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode also handles non-ASCII paths
    except OSError as err:
        raise InputError(f"cannot read image {path}: {err}") from err
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"cannot decode image {path}: not an image OpenCV can read, or the file is damaged")
    return image


def list_folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` with an image suffix, recursively, in a stable order; hidden entries skipped."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files)


def iter_folder(files: list[Path]) -> Iterator[Frame | Unreadable]:
    """Decode ``files`` (from :func:`list_folder_files`, listed once by the caller) one at a time."""
    for path in files:
        try:
            yield Frame(str(path), 0, None, read_image(path))
        except InputError as err:
            yield Unreadable(str(path), str(err))


class VideoStream:
    """A video file or webcam, read frame by frame, keeping every ``every_n_frames``-th frame or a target fps.

    For a file, ``fps`` becomes a frame step (source fps / target fps), so results do not depend on how fast this
    machine is; for a webcam, which runs in real time, ``fps`` throttles by the clock.
    """

    def __init__(self, spec: InputSpec, every_n_frames: int = 1, fps: float | None = None,
                 max_frames: int | None = None, duration_s: float | None = None,
                 capture_factory: Callable[[Any], Any] = cv2.VideoCapture) -> None:
        if spec.kind not in ("video", "webcam"):
            raise ValueError(f"VideoStream reads videos and webcams, not {spec.kind}")
        if every_n_frames < 1:
            raise ValueError(f"every_n_frames must be >= 1, got {every_n_frames}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.spec = spec
        self.max_frames = max_frames
        self.duration_s = duration_s
        self.capture = capture_factory(spec.camera if spec.kind == "webcam" else str(spec.path))
        if not self.capture.isOpened():
            what = f"webcam {spec.camera} (no camera with that number, or it is busy)" \
                if spec.kind == "webcam" else f"video {spec.path} (damaged, or a codec OpenCV's FFmpeg lacks)"
            raise InputError(f"cannot open {what}")
        source_fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.source_fps = source_fps if 0.0 < source_fps < 1000.0 else 30.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if spec.kind == "video" and count > 0 else None
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self.min_interval_s = 0.0
        if spec.kind == "video" and fps is not None:
            every_n_frames = max(every_n_frames, int(round(self.source_fps / fps)))
        elif fps is not None:
            self.min_interval_s = 1.0 / fps
        self.every_n_frames = every_n_frames
        self.frames_read = 0  # frames decoded or skipped so far; less than frame_count means the file ended early

    @property
    def output_fps(self) -> float:
        """Frame rate of an annotated video made of the kept frames, so it plays at real speed."""
        if self.min_interval_s:
            return 1.0 / self.min_interval_s
        return self.source_fps / self.every_n_frames

    @property
    def expected_frames(self) -> int | None:
        """How many frames will be kept, when that is known in advance (for the progress bar)."""
        if self.frame_count is None:
            return self.max_frames
        kept = (self.frame_count + self.every_n_frames - 1) // self.every_n_frames
        return min(kept, self.max_frames) if self.max_frames is not None else kept

    def __iter__(self) -> Iterator[Frame]:
        start = time.perf_counter()
        last_kept = -float("inf")
        kept, index = 0, -1
        try:
            while self.max_frames is None or kept < self.max_frames:
                # grab() without decoding for frames that are skipped anyway
                if not self.capture.grab():
                    break
                index += 1
                self.frames_read = index + 1
                now = time.perf_counter() - start
                if self.duration_s is not None and now > self.duration_s:
                    break
                if index % self.every_n_frames or now - last_kept < self.min_interval_s:
                    continue
                ok, image = self.capture.retrieve()
                if not ok or image is None:
                    break
                last_kept = now
                kept += 1
                time_s = index / self.source_fps if self.spec.kind == "video" else now
                yield Frame(self.spec.name, index, round(time_s, 6), image)
        finally:
            self.capture.release()
