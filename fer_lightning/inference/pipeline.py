"""The emotion finder over a whole input: a photo, a folder of photos, a video file or ``webcam:N``.

`run(PredictConfig(...))` writes ``predictions.jsonl`` (one record per face per frame), optionally
``predictions.csv``, annotated images or an annotated video, and ``summary.json`` (counts, unreadable files,
measured fps; for a video or webcam also one summary per face track), plus ``timeline.png`` for a video or webcam,
and returns the summary. Without ``ckpt_path`` the model shipped with the package is used. The
command `python -m fer_lightning.predict` (`fer_lightning/cli/predict.py`) parses ``key=value`` into a
`PredictConfig` and calls `run`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2

from fer_lightning.inference.annotate import annotate
from fer_lightning.inference.recognizer import EmotionRecognizer, FaceRecord
from fer_lightning.inference.tracking import DEFAULT_MAX_GAP_S, DEFAULT_SMOOTH_S, EmotionTracker
from fer_lightning.inference.video import (
    Frame,
    InputError,
    InputSpec,
    Unreadable,
    VideoStream,
    iter_folder,
    list_folder_files,
    read_image,
    resolve_input,
)
from fer_lightning.inference.writers import PredictionWriter


@dataclass
class PredictConfig:
    input: str | None = None  # photo, folder, video file or webcam:N
    ckpt_path: str | None = None  # a .ckpt (PyTorch) or .onnx (onnxruntime) model; default: the shipped model
    output: str | None = None  # default: outputs/predict/<timestamp>
    detector: str = "auto"  # auto (YuNet; Haar only if the YuNet model cannot be had) | yunet | haar | none
    yunet_model: str | None = None  # YuNet .onnx file; default: $FER_LIGHTNING_YUNET_MODEL, else the packaged one
    device: str = "cpu"
    threads: int | None = 1  # classifier CPU threads; 1 is fastest per frame (the detector uses the others)
    min_face_size: int = 0  # ignore faces whose shorter side is below this many pixels
    largest_only: bool = False  # keep only the largest face per frame
    margin: float = 0.0  # widen each squared face box by this fraction per side (0 matches FER2013 best)
    # Longest side (pixels) a frame is shrunk to before detection; boxes map back and faces are cut from the full
    # frame. None: the detector's default (1280). 320 makes YuNet ~4x faster on 640x480 (one large face, as from a
    # webcam); smaller faces are missed sooner (experiments/cross_dataset/README.md, "The finder's speed").
    detect_max_side: int | None = None
    # Enlarge each frame this many times (1-4) for detection only: finds smaller faces (a group photo's back row:
    # 24 px faces 8% -> 75% found at 2; experiments/inference/README.md, "Group photos"), at ~upscale^2 the
    # detector's time. Applied after detect_max_side's shrinking.
    detect_upscale: float = 1.0
    align: bool = True  # rotate each face so its eyes are level (YuNet's eye landmarks; no effect with Haar/none)
    face_crop: bool = False  # every input image is already one face: skip detection
    every_n_frames: int = 1  # video/webcam: process every n-th frame
    fps: float | None = None  # video/webcam: target frames per second (a frame step for files)
    max_frames: int | None = None  # video/webcam: stop after this many processed frames
    # Video/webcam: each face gets a track_id, and its track's probabilities are smoothed over this many seconds
    # (an exponential time constant; 0 = raw). Records keep the raw probs/label beside smoothed_probs/label, and
    # the annotated video shows the smoothed label. Photos and folders are never smoothed.
    smooth_s: float = DEFAULT_SMOOTH_S
    track_max_gap_s: float = DEFAULT_MAX_GAP_S  # a face unseen for longer than this comes back as a new track
    duration_s: float | None = None  # webcam: stop after this many seconds (Ctrl+C also stops cleanly)
    annotate: bool = True  # write annotated images / video
    # The annotated video's container and codec: mp4 (MPEG-4 Part 2, for video players) or webm (VP8, which web
    # browsers play; OpenCV's wheels have no H.264 encoder).
    video_format: str = "mp4"
    csv: bool = False  # also write predictions.csv
    progress: bool = True  # progress bar with the running fps


def build_recognizer(cfg: PredictConfig) -> EmotionRecognizer:
    yunet = cfg.detector in ("yunet", "auto") and cfg.yunet_model
    options: dict[str, Any] = {"model_path": cfg.yunet_model} if yunet else {}
    if cfg.detect_max_side is not None and cfg.detector in ("yunet", "haar", "auto"):
        options["max_side"] = int(cfg.detect_max_side)
    if cfg.detect_upscale != 1.0 and cfg.detector in ("yunet", "haar", "auto"):
        options["upscale"] = float(cfg.detect_upscale)
    return EmotionRecognizer.from_checkpoint(
        cfg.ckpt_path, detector=cfg.detector, device=cfg.device, threads=cfg.threads, min_face_size=cfg.min_face_size,
        largest_only=cfg.largest_only, margin=cfg.margin, align=cfg.align,
        detector_options=options or None,
    )


def run(cfg: PredictConfig, recognizer: EmotionRecognizer | None = None,
        capture_factory: Any = cv2.VideoCapture) -> dict[str, Any]:
    """Run the emotion finder over ``cfg.input``; returns the summary that is also written to summary.json."""
    if not cfg.input:
        raise InputError("no input given: pass input=PATH (a photo, a folder, a video file) or input=webcam:0")
    if cfg.video_format not in VIDEO_FORMATS:
        raise ValueError(f"video_format must be one of {sorted(VIDEO_FORMATS)}, got {cfg.video_format!r}")
    spec = resolve_input(cfg.input)
    stream = None
    if spec.kind in ("video", "webcam"):
        stream = VideoStream(spec, every_n_frames=cfg.every_n_frames, fps=cfg.fps, max_frames=cfg.max_frames,
                             duration_s=cfg.duration_s, capture_factory=capture_factory)
    elif spec.kind == "image":
        read_image(spec.path)  # a single unreadable photo fails now, before any output is written
    tracker = EmotionTracker(cfg.smooth_s, cfg.track_max_gap_s) if stream is not None else None
    recognizer = recognizer or build_recognizer(cfg)
    output = Path(cfg.output or Path("outputs", "predict", datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")))
    output.mkdir(parents=True, exist_ok=True)
    files = list_folder_files(spec.path) if spec.kind == "folder" else None  # listed once: frames and progress
    frames: Any = _frames(spec, stream, files)
    counts = {"frames": 0, "faces": 0, "frames_without_face": 0}
    tracked: list[dict[str, Any]] = []
    unreadable: list[dict[str, str]] = []
    annotated = _AnnotatedOutput(output, spec, stream, cfg.video_format) if cfg.annotate else None
    interrupted = False
    started = time.perf_counter()
    with PredictionWriter(output, recognizer.class_names, write_csv=cfg.csv) as writer, \
            _progress(cfg.progress, _expected_items(spec, stream, files)) as advance:
        try:
            for item in frames:
                if isinstance(item, Unreadable):
                    unreadable.append({"source": item.source, "error": item.error})
                    advance(counts, started)
                    continue
                faces = recognizer.predict(item.image, face_crop=cfg.face_crop)
                if tracker is not None:
                    faces = tracker.update(faces, item.time_s if item.time_s is not None else float(item.index))
                written = writer.write(item, faces)
                if tracker is not None:  # what the timeline is drawn from, kept as written (no re-read)
                    tracked.extend(r for r in written if r.get("track_id") is not None)
                counts["frames"] += 1
                counts["faces"] += len(faces)
                counts["frames_without_face"] += not faces
                if annotated is not None:
                    annotated.write(item, faces)
                advance(counts, started)
        except KeyboardInterrupt:
            interrupted = True  # a webcam is stopped this way; everything so far is already written
        finally:
            if annotated is not None:
                annotated.close()
    wall_s = time.perf_counter() - started
    summary: dict[str, Any] = {
        "input": spec.name, "kind": spec.kind, "model": str(cfg.ckpt_path or "shipped"),
        "detector": recognizer.detector.name, **counts, "unreadable": unreadable,
        "wall_s": round(wall_s, 3), "fps": round(counts["frames"] / wall_s, 2) if wall_s > 0 else None,
        "interrupted": interrupted, "output": str(output), "predictions": str(writer.jsonl_path),
        "csv": str(writer.csv_path) if writer.csv_path else None,
        "annotated": [str(p) for p in annotated.paths] if annotated is not None else [],
        "config": asdict(cfg),
    }
    if stream is not None and stream.frame_count is not None and stream.frames_read < stream.frame_count \
            and not (cfg.max_frames or cfg.duration_s or interrupted):
        summary["warning"] = (f"the video ended at frame {stream.frames_read} of the {stream.frame_count} "
                              "its header announces (truncated or damaged file)")
    if tracker is not None:
        summary.update(_timelines(tracked, output))
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _timelines(records: list[dict[str, Any]], output: Path) -> dict[str, Any]:
    """A video's per-track summaries and timeline plot, from its tracked face records."""
    from fer_lightning.inference.timeline import plot_timelines, track_summaries

    tracks = track_summaries(records)
    plot = plot_timelines(records, output / "timeline.png") if tracks else None
    return {"tracks": tracks, "timeline": str(plot) if plot else None}


def _expected_items(spec: InputSpec, stream: VideoStream | None, files: list[Path] | None) -> int | None:
    if stream is not None:
        return stream.expected_frames
    return len(files) if files is not None else 1


def _frames(spec: InputSpec, stream: VideoStream | None, files: list[Path] | None) -> Any:
    if stream is not None:
        return iter(stream)
    if files is not None:
        return iter_folder(files)
    return iter([Frame(str(spec.path), 0, None, read_image(spec.path))])


# The annotated video: container suffix -> OpenCV fourcc.
VIDEO_FORMATS = {"mp4": "mp4v", "webm": "VP80"}

# Annotated photos keep their input's format where OpenCV writes it; anything else (e.g. GIF) becomes a JPEG.
KEPT_IMAGE_FORMATS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class _AnnotatedOutput:
    """Annotated copies: one image per photo (folder layout mirrored) or one video per video/webcam input."""

    def __init__(self, output: Path, spec: InputSpec, stream: VideoStream | None, video_format: str = "mp4") -> None:
        self.dir = output / "annotated"
        self.video_format = video_format
        self.spec = spec
        self.stream = stream
        self.writer: cv2.VideoWriter | None = None
        self.paths: list[Path] = []

    def write(self, frame: Frame, faces: list[FaceRecord]) -> None:
        image = annotate(frame.image, faces)
        if self.stream is None:
            source = Path(frame.source)
            relative = source.relative_to(self.spec.path) if self.spec.kind == "folder" else Path(source.name)
            suffix = relative.suffix.lower() if relative.suffix.lower() in KEPT_IMAGE_FORMATS else ".jpg"
            path = (self.dir / relative).with_suffix(suffix)  # a PNG stays lossless, a JPEG stays a JPEG
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), image):
                raise OSError(f"could not write annotated image {path}")
            self.paths.append(path)
            return
        if self.writer is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            stem = f"webcam_{self.spec.camera}" if self.spec.kind == "webcam" else self.spec.path.stem
            path = self.dir / f"{stem}.{self.video_format}"
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_FORMATS[self.video_format])
            self.writer = cv2.VideoWriter(str(path), fourcc, self.stream.output_fps, (width, height))
            if not self.writer.isOpened():
                raise OSError(f"could not open a video writer for {path}")
            self.paths.append(path)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class _progress:
    """A Rich progress bar with the running fps, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled = enabled
        self.total = total
        self.progress: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda counts, started: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[fps]}"), transient=False)
        self.progress.start()
        task = self.progress.add_task("predict", total=self.total, fps="")

        def advance(counts: dict[str, int], started: float) -> None:
            elapsed = time.perf_counter() - started
            fps = f"{counts['frames'] / elapsed:.1f} frames/s" if elapsed > 0 else ""
            self.progress.update(task, advance=1, fps=fps)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
