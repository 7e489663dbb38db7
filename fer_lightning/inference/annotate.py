"""Drawing results onto frames: a box per face and its top emotion with the probability (in a video, the
track's smoothed emotion, after the track's number)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fer_lightning.inference.recognizer import FaceRecord

# One BGR colour per emotion, so a reviewer can read a crowded frame at a glance.
EMOTION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 110, 30), "surprise": (230, 200, 0), "neutral": (200, 200, 200),
}
FALLBACK_COLOR = (255, 255, 255)


def annotate(image: np.ndarray, records: Sequence[FaceRecord]) -> np.ndarray:
    """A BGR copy of ``image`` with every face boxed and labelled; line and text scale with the image size."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
    scale = max(canvas.shape[:2]) / 640.0
    thickness = max(1, int(round(2 * scale)))
    font_scale = 0.5 * max(scale, 0.6)
    for record in records:
        x, y, w, h = record.box
        label = record.shown_label
        color = EMOTION_COLORS.get(label, FALLBACK_COLOR)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), color, thickness)
        text = f"{label} {record.shown_confidence:.0%}"
        if record.track_id is not None:
            text = f"#{record.track_id} {text}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y - th - baseline - 4 if y - th - baseline - 4 >= 0 else y + h  # above the box, else below it
        cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + baseline + 4), color, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return canvas
