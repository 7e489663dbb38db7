"""Group photos: every face of a crowded photo found and classified in one batch, and labels that stay legible
(sized by their face, never printed over each other)."""

from __future__ import annotations

from itertools import combinations

import cv2
import numpy as np
import pytest
from conftest import face_photo, requires_yunet

from fer_lightning.inference.annotate import MAX_FONT, MIN_FONT, annotate, label_layout
from fer_lightning.inference.recognizer import EmotionRecognizer, FaceRecord

SIZES = (32, 40, 48, 64, 80, 96, 112, 128)  # face widths in pixels, three of each


def group_photo() -> tuple[np.ndarray, list[int]]:
    """24 copies of a real face (the astronaut portrait's, with some hair and shoulders around it) at 8 sizes."""
    crop = face_photo()[35:205, 150:300]  # the face is about 90 px wide in it
    canvas = np.full((800, 1600, 3), (90, 110, 130), np.uint8)
    sizes, x, y, row_height = [], 10, 10, 0
    for i in range(24):
        size = SIZES[i % len(SIZES)]
        tile = cv2.resize(crop, None, fx=size / 90, fy=size / 90, interpolation=cv2.INTER_AREA)
        height, width = tile.shape[:2]
        if x + width > canvas.shape[1] - 10:
            x, y, row_height = 10, y + row_height + 10, 0
        canvas[y:y + height, x:x + width] = tile
        sizes.append(size)
        x, row_height = x + width + 10, max(row_height, height)
    return canvas, sizes


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@requires_yunet
def test_every_face_of_a_group_photo_is_found_and_classified_in_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    photo, sizes = group_photo()
    recognizer = EmotionRecognizer.from_checkpoint(detector="yunet")
    batches: list[int] = []
    original = recognizer.classifier.predict_proba
    monkeypatch.setattr(recognizer.classifier, "predict_proba", lambda x: batches.append(len(x)) or original(x))
    records = recognizer.predict(photo)
    assert len(records) == len(sizes) == 24 and batches == [24]
    widths = sorted(record.box[2] for record in records)
    for size, width in zip(sorted(sizes), widths, strict=True):
        assert 0.7 * size <= width <= 1.1 * size  # each size found, none twice
    layout = label_layout(records, photo.shape)
    assert not any(_overlaps(a.rect, b.rect) for a, b in combinations(layout, 2))
    assert all(0 <= p.rect[0] and p.rect[2] <= photo.shape[1] and 0 <= p.rect[1] and p.rect[3] <= photo.shape[0]
               for p in layout)  # every label inside the photo
    by_width = sorted(zip((r.box[2] for r in records), (p.font_scale for p in layout)))
    assert [scale for _, scale in by_width] == sorted(scale for _, scale in by_width)  # larger face, larger text
    assert annotate(photo, records).shape == photo.shape


def _record(x: int, y: int, w: int, label: str = "happy") -> FaceRecord:
    return FaceRecord(box=(x, y, w, w), score=0.9, probs={label: 0.9, "neutral": 0.1})


def test_crowded_labels_move_below_or_inside_their_box_instead_of_overlapping() -> None:
    """A row of faces 45 px apart: each label is wider than the gap, so above the boxes they would collide."""
    records = [_record(10 + 45 * i, 100, 40) for i in range(10)]
    layout = label_layout(records, (400, 600, 3))
    assert not any(_overlaps(a.rect, b.rect) for a, b in combinations(layout, 2))
    places = {"above" if p.rect[3] <= 100 else "below" if p.rect[1] >= 140 else "inside" for p in layout}
    assert "above" in places and len(places) >= 2


def test_label_size_follows_the_face_within_legible_bounds() -> None:
    tiny, medium, huge = label_layout([_record(0, 50, 10), _record(100, 50, 120), _record(300, 50, 1000)],
                                      (1200, 1400, 3))
    assert tiny.font_scale == MIN_FONT and huge.font_scale == MAX_FONT
    assert MIN_FONT < medium.font_scale < MAX_FONT
