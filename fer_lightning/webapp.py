"""The emotion finder in a browser page (Gradio): a photo, a video or the webcam in; annotated result, per-face
probabilities and, for a video, the per-track timeline out. `python -m fer_lightning.app` starts it
(`fer_lightning/cli/app.py`); this module builds the page and holds the handlers, which are plain functions of
numpy images and file paths, so they are tested without a browser, and once more through a real one.

Safe by default, since a page is something other people can reach:
- it listens on 127.0.0.1 unless `host=` says otherwise, and never opens a Gradio share link by itself;
- uploads are capped (`max_upload_mb`), and videos longer than `max_video_s` are refused before any frame is read;
- the model and the detector are chosen when the app starts; no field takes a server path, so a visitor can only
  hand over the files they upload.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_lightning.errors import FERLightningError
from fer_lightning.inference.annotate import annotate
from fer_lightning.inference.pipeline import PredictConfig, run
from fer_lightning.inference.recognizer import EmotionRecognizer, FaceRecord
from fer_lightning.inference.tracking import DEFAULT_SMOOTH_S, EmotionTracker

LOCALHOST = "127.0.0.1"


class AppInputError(FERLightningError, ValueError):
    """An upload the app refuses (too long a video, an unreadable file); the page shows the message."""


@dataclass(frozen=True)
class AppSettings:
    """What the person starting the app decides (visitors cannot change any of it)."""

    ckpt_path: str | None = None  # a .ckpt or .onnx; None: the model shipped in the package
    detector: str = "auto"
    host: str = LOCALHOST  # 0.0.0.0 to serve the local network: a deliberate choice, never the default
    port: int = 7860
    share: bool = False  # a public *.gradio.live link: only when asked for
    max_upload_mb: float = 25.0
    max_video_s: float = 60.0
    smooth_s: float = DEFAULT_SMOOTH_S  # video and webcam label smoothing (seconds)

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.max_video_s <= 0:
            raise ValueError(f"max_upload_mb and max_video_s must be > 0, got {self.max_upload_mb}, "
                             f"{self.max_video_s}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")


FACE_COLUMNS = ("face", "x", "y", "w", "h", "label")
TRACK_COLUMNS = ("track", "first s", "last s", "frames", "dominant", "share of frames")


def face_rows(faces: list[FaceRecord], class_names: tuple[str, ...]) -> list[list[Any]]:
    """One row per face: number, box, label, then every class's probability in percent."""
    return [[i + 1, *face.box, face.shown_label, *(round(100 * (face.smoothed_probs or face.probs)[name], 1)
                                                  for name in class_names)]
            for i, face in enumerate(faces)]


class EmotionApp:
    """The page's handlers around one recogniser (loaded once, at start-up)."""

    def __init__(self, recognizer: EmotionRecognizer, settings: AppSettings) -> None:
        self.recognizer = recognizer
        self.settings = settings

    @property
    def face_headers(self) -> list[str]:
        return [*FACE_COLUMNS, *(f"{name} %" for name in self.recognizer.class_names)]

    def analyze_photo(self, image_rgb: np.ndarray | None) -> tuple[np.ndarray, list[list[Any]], str]:
        """Annotated photo (RGB), a row per face, and a one-line summary."""
        if image_rgb is None:
            raise AppInputError("no photo: upload one first")
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR) if image_rgb.ndim == 3 else image_rgb
        faces = self.recognizer.predict(bgr)
        annotated = cv2.cvtColor(annotate(bgr, faces), cv2.COLOR_BGR2RGB)
        return annotated, face_rows(faces, self.recognizer.class_names), _faces_sentence(faces)

    def analyze_video(self, path: str | None) -> tuple[str, str | None, list[list[Any]], str]:
        """Annotated video (WebM, which browsers play), the timeline plot, a row per track, and a summary."""
        if not path:
            raise AppInputError("no video: upload one first")
        seconds = video_seconds(path)
        if seconds > self.settings.max_video_s:
            raise AppInputError(f"the video is {seconds:.0f} s long; this app takes videos up to "
                                f"{self.settings.max_video_s:g} s (whoever started it can raise max_video_s)")
        output = Path(tempfile.mkdtemp(prefix="fer_app_video_"))
        summary = run(PredictConfig(input=path, output=str(output), progress=False, smooth_s=self.settings.smooth_s,
                                    video_format="webm"), recognizer=self.recognizer)
        annotated = summary["annotated"][0]
        rows = [[t["track_id"], round(t["first_s"], 2), round(t["last_s"], 2), t["frames"], t["dominant"],
                 ", ".join(f"{name} {share:.0%}" for name, share in sorted(t["share"].items(), key=lambda kv: -kv[1])
                           if share >= 0.005)]
                for t in summary.get("tracks", [])]
        text = (f"{summary['frames']} frames in {summary['wall_s']:.1f} s ({summary['fps']:.0f} frames/s), "
                f"{len(rows)} face track(s), {summary['frames_without_face']} frames without a face.")
        return str(annotated), summary.get("timeline"), rows, text

    def webcam_frame(self, image_rgb: np.ndarray | None, state: dict[str, Any] | None
                     ) -> tuple[np.ndarray | None, list[list[Any]], dict[str, Any]]:
        """One webcam frame: tracked, smoothed and annotated; the tracker lives in the visitor's session state."""
        state = state or {"tracker": EmotionTracker(self.settings.smooth_s), "start": time.monotonic()}
        if image_rgb is None:
            return None, [], state
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        faces = state["tracker"].update(self.recognizer.predict(bgr), time.monotonic() - state["start"])
        annotated = cv2.cvtColor(annotate(bgr, faces), cv2.COLOR_BGR2RGB)
        return annotated, face_rows(faces, self.recognizer.class_names), state

    def build(self) -> Any:
        """The Gradio page (gradio is imported here: it is an optional extra, `fer_lightning[app]`)."""
        import gradio as gr

        model = Path(self.settings.ckpt_path).name if self.settings.ckpt_path else "the shipped FER2013 model"
        with gr.Blocks(title="fer_lightning emotion finder", analytics_enabled=False) as page:
            gr.Markdown(f"## Emotion finder\nFaces found by `{self.recognizer.detector.name}`, emotions read by "
                        f"{model} ({', '.join(self.recognizer.class_names)}).")
            with gr.Tab("Photo"):
                with gr.Row():
                    photo = gr.Image(type="numpy", sources=["upload", "clipboard"], label="photo",
                                     elem_id="photo-input")
                    photo_out = gr.Image(type="numpy", label="faces found", elem_id="photo-output")
                photo_button = gr.Button("Find emotions", variant="primary", elem_id="photo-button")
                photo_text = gr.Markdown(elem_id="photo-summary")
                photo_table = gr.Dataframe(headers=self.face_headers, label="per face (%)", elem_id="photo-faces")
                photo_button.click(_shown_errors(self.analyze_photo), [photo],
                                   [photo_out, photo_table, photo_text])
            with gr.Tab("Video"):
                with gr.Row():
                    video = gr.Video(sources=["upload"], label=f"video (up to {self.settings.max_video_s:g} s)",
                                     elem_id="video-input")
                    video_out = gr.Video(label="annotated", elem_id="video-output")
                video_button = gr.Button("Find emotions", variant="primary", elem_id="video-button")
                video_text = gr.Markdown(elem_id="video-summary")
                timeline = gr.Image(type="filepath", label="emotions over time, per face track", show_label=False,
                                    elem_id="video-timeline")
                tracks = gr.Dataframe(headers=list(TRACK_COLUMNS), label="per face track", elem_id="video-tracks")
                video_button.click(_shown_errors(self.analyze_video), [video],
                                   [video_out, timeline, tracks, video_text])
            with gr.Tab("Webcam"):
                with gr.Row():
                    camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="webcam",
                                      elem_id="webcam-input")
                    camera_out = gr.Image(type="numpy", label="faces found", elem_id="webcam-output")
                camera_table = gr.Dataframe(headers=self.face_headers, label="per face (%)", elem_id="webcam-faces")
                session = gr.State(None)
                camera.stream(self.webcam_frame, [camera, session], [camera_out, camera_table, session],
                              stream_every=0.15, time_limit=600)
        return page

    def launch(self, **kwargs: Any) -> Any:
        page = self.build()
        s = self.settings
        return page.launch(server_name=s.host, server_port=s.port, share=s.share,
                           max_file_size=f"{s.max_upload_mb:g}mb", ssr_mode=False, **kwargs)


def _faces_sentence(faces: list[FaceRecord]) -> str:
    if not faces:
        return "No face found."
    labels = ", ".join(f"face {i + 1}: {f.label} ({f.confidence:.0%})" for i, f in enumerate(faces))
    return f"{len(faces)} face(s): {labels}."


def _shown_errors(handler: Any) -> Any:
    """A refused upload reaches the visitor as the page's error message, not as a server traceback."""
    import functools

    import gradio as gr

    @functools.wraps(handler)
    def wrapped(*args: Any) -> Any:
        try:
            return handler(*args)
        except (AppInputError, FERLightningError, ValueError) as err:
            raise gr.Error(str(err)) from err

    return wrapped


def video_seconds(path: str | Path) -> float:
    """A video's length from its header (frames / fps), read without decoding a frame."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise AppInputError(f"cannot read {Path(path).name} as a video")
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    finally:
        capture.release()
    if frames <= 0 or not 0 < fps < 1000:
        raise AppInputError(f"{Path(path).name}: the video's header gives no length (frames {frames:g}, fps {fps:g})")
    return float(frames / fps)
