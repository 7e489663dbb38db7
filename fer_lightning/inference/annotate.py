"""Drawing results onto frames: a box per face and its top emotion with the probability (in a video, the
track's smoothed emotion, after the track's number).

Group photos decide the layout: a label is sized by its own face (a small face far back gets small text, a large
one large text, within legible bounds), sits above its box, and moves below it, or inside it, when that place is
taken by a label already drawn, so twenty faces in a row never print over each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fer_lightning.inference.recognizer import FaceRecord

# One BGR colour per emotion, so a reviewer can read a crowded frame at a glance.
EMOTION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 110, 30), "surprise": (230, 200, 0), "neutral": (200, 200, 200),
}
FALLBACK_COLOR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Font scale per pixel of face width, and its bounds: 0.35 is about the smallest OpenCV text a person can read,
# 1.2 keeps a close-up's label from covering the face.
FONT_PER_FACE_PX = 1 / 200
MIN_FONT, MAX_FONT = 0.35, 1.2


@dataclass(frozen=True)
class LabelPlacement:
    """Where one face's label goes: its text, font scale, stroke, and the filled background rectangle
    (x0, y0, x1, y1) in pixels; the text's baseline-left corner is (x0 + 2, y1 - baseline - 2)."""

    text: str
    font_scale: float
    thickness: int
    rect: tuple[int, int, int, int]
    baseline: int


def label_text(record: FaceRecord) -> str:
    text = f"{record.shown_label} {record.shown_confidence:.0%}"
    return f"#{record.track_id} {text}" if record.track_id is not None else text


def label_layout(records: Sequence[FaceRecord], image_shape: tuple[int, ...]) -> list[LabelPlacement]:
    """A label per face, in `records` order, sized by its face and placed where no earlier label is."""
    height, width = image_shape[:2]
    taken: list[tuple[int, int, int, int]] = []
    # Larger faces first: a close-up's label keeps its natural place, a small face's label moves around it.
    order = sorted(range(len(records)), key=lambda i: -records[i].box[2] * records[i].box[3])
    by_index: dict[int, LabelPlacement] = {}
    for i in order:
        x, y, w, h = records[i].box
        text = label_text(records[i])
        font_scale = float(np.clip(w * FONT_PER_FACE_PX, MIN_FONT, MAX_FONT))
        thickness = max(1, int(round(2 * font_scale)))
        (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
        box_w, box_h = tw + 4, th + baseline + 4
        left = int(np.clip(x, 0, max(0, width - box_w)))
        candidates = [y - box_h, y + h, y, y + h - box_h]  # above, below, inside top, inside bottom
        rect = None
        for top in candidates:
            top = int(np.clip(top, 0, max(0, height - box_h)))
            option = (left, top, left + box_w, top + box_h)
            if not any(_overlap(option, other) for other in taken):
                rect = option
                break
        if rect is None:  # every place is taken: above the box, as before (rare: faces stacked on faces)
            top = int(np.clip(y - box_h, 0, max(0, height - box_h)))
            rect = (left, top, left + box_w, top + box_h)
        taken.append(rect)
        by_index[i] = LabelPlacement(text, font_scale, thickness, rect, baseline)
    placements = [by_index[i] for i in range(len(records))]
    return placements


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def annotate(image: np.ndarray, records: Sequence[FaceRecord]) -> np.ndarray:
    """A BGR copy of ``image`` with every face boxed and labelled (see the module docstring for the layout)."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
    for record, place in zip(records, label_layout(records, canvas.shape), strict=True):
        x, y, w, h = record.box
        color = EMOTION_COLORS.get(record.shown_label, FALLBACK_COLOR)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), color, max(1, int(round(w / 60))))
        x0, y0, x1, y1 = place.rect
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, cv2.FILLED)
        cv2.putText(canvas, place.text, (x0 + 2, y1 - place.baseline - 2), FONT, place.font_scale, (0, 0, 0),
                    place.thickness, cv2.LINE_AA)
    return canvas
