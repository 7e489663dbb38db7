"""`detect_max_side` (the finder's speed knob) and `detect_upscale` (its small-face knob) reach the detector, and
only the detector (faces stay full-size)."""

from __future__ import annotations

import cv2
import numpy as np
from conftest import face_photo, requires_yunet, yunet_model_file

from fer_lightning.inference.pipeline import PredictConfig, build_recognizer


def test_haar_gets_the_max_side_and_keeps_its_default_without_it() -> None:
    assert build_recognizer(PredictConfig(detector="haar", detect_max_side=320)).detector.max_side == 320
    assert build_recognizer(PredictConfig(detector="haar")).detector.max_side == 1280


def test_no_detector_ignores_it() -> None:
    recognizer = build_recognizer(PredictConfig(detector="none", detect_max_side=320))
    assert recognizer.predict(face_photo())  # the whole image is the face, whatever the setting


@requires_yunet
def test_yunet_detects_on_the_shrunk_frame_and_boxes_map_back() -> None:
    photo = np.zeros((960, 1280, 3), np.uint8)
    photo[100:612, 300:812] = face_photo()
    full = build_recognizer(PredictConfig(detector="yunet", yunet_model=yunet_model_file())).predict(photo)
    fast = build_recognizer(PredictConfig(detector="yunet", yunet_model=yunet_model_file(), detect_max_side=320))
    assert fast.detector.max_side == 320
    shrunk = fast.predict(photo)
    assert len(full) == len(shrunk) == 1
    # boxes in the full frame's pixels (the astronaut's face is at about (478, 163, 90, 113) here)
    assert np.allclose(shrunk[0].box, full[0].box, atol=12), (shrunk[0].box, full[0].box)


@requires_yunet
def test_detect_upscale_reaches_the_detector_and_finds_a_small_face() -> None:
    assert build_recognizer(PredictConfig(detector="haar", detect_upscale=2)).detector.upscale == 2.0
    assert build_recognizer(PredictConfig(detector="yunet")).detector.upscale == 1.0
    crop = face_photo()[35:205, 150:300]
    canvas = np.full((240, 320, 3), (90, 110, 130), np.uint8)
    tile = cv2.resize(crop, None, fx=16 / 90, fy=16 / 90, interpolation=cv2.INTER_AREA)
    canvas[100:100 + tile.shape[0], 150:150 + tile.shape[1]] = tile
    assert build_recognizer(PredictConfig(detector="yunet")).predict(canvas) == []
    (face,) = build_recognizer(PredictConfig(detector="yunet", detect_upscale=2)).predict(canvas)
    assert 150 <= face.box[0] <= 160
