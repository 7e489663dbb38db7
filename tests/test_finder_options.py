"""`detect_max_side`: the finder's speed knob reaches the detector, and only the detector (faces stay full-size)."""

from __future__ import annotations

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
