"""Face detectors on a real photo: boxes in original pixels, scaling of big and small faces, model resolution."""

from __future__ import annotations

import functools
import io
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import YUNET_ENV, face_crop, face_photo, requires_yunet, yunet_model_file

from fer_lightning.inference.detectors import (
    YUNET_RUNTIMES,
    YUNET_URL,
    Detection,
    DetectorUnavailable,
    FaceDetector,
    HaarDetector,
    WholeImageDetector,
    YuNetDetector,
    create_detector,
    decode_yunet,
    yunet_model_path,
)

FACE_BOX = (178, 63, 90, 113)  # the astronaut's face in face_photo(), as YuNet reports it
CACHED_NAME = "face_detection_yunet_2023mar.onnx"


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter = max(0, min(ax1, bx1) - max(a[0], b[0])) * max(0, min(ay1, by1) - max(a[1], b[1]))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def scaled_box(box: tuple[int, int, int, int], scale: float, dx: int, dy: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return round(x * scale) + dx, round(y * scale) + dy, round(w * scale), round(h * scale)


def on_canvas(image: np.ndarray, scale: float, canvas_hw: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """The photo resized by `scale`, pasted at (x, y) = `at` on a uniform gray BGR canvas."""
    side = round(image.shape[0] * scale)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (side, side), interpolation=interpolation)
    canvas = np.full((*canvas_hw, 3), 128, np.uint8)
    canvas[at[1]:at[1] + side, at[0]:at[0] + side] = resized
    return canvas


def assert_valid(detections: list[Detection], image: np.ndarray) -> None:
    """Every box inside the image, non-empty, ints; detections most confident first."""
    height, width = image.shape[:2]
    for det in detections:
        x, y, w, h = det.box
        assert all(isinstance(v, int) for v in det.box)
        assert isinstance(det.score, float)
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)


@functools.cache
def _yunet(runtime: str) -> YuNetDetector:
    path = yunet_model_file()
    if path is None:
        pytest.skip(f"{YUNET_ENV} is not set (YuNet model file not available)")
    return YuNetDetector(model_path=path, runtime=runtime)


@pytest.fixture(params=["onnxruntime", "opencv"])
def yunet(request: pytest.FixtureRequest) -> YuNetDetector:
    """Every YuNet test runs on both runtimes: onnxruntime (the default) must behave as OpenCV's detector."""
    return _yunet(request.param)


@pytest.fixture(scope="module")
def haar() -> HaarDetector:
    return HaarDetector()


@pytest.fixture(params=["haar", "yunet", "yunet_opencv"])
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    return _named(request, request.param)


def _named(request: pytest.FixtureRequest, name: str) -> FaceDetector:
    if name == "haar":
        return request.getfixturevalue("haar")
    return _yunet("opencv" if name == "yunet_opencv" else "onnxruntime")


# --- One real face --------------------------------------------------------------------------------------------


def test_each_detector_finds_the_one_face(detector: FaceDetector) -> None:
    image = face_photo()
    detections = detector.detect(image)
    assert_valid(detections, image)
    assert len(detections) == 1
    assert iou(detections[0].box, FACE_BOX) > 0.5


@requires_yunet
def test_yunet_score_is_a_probability_above_threshold(yunet: YuNetDetector) -> None:
    (det,) = yunet.detect(face_photo())
    assert 0.6 < det.score <= 1.0
    assert iou(det.box, FACE_BOX) > 0.9  # YuNet is what defined FACE_BOX


def test_haar_score_is_the_level_weight(haar: HaarDetector) -> None:
    (det,) = haar.detect(face_photo())
    assert det.score > 1.0  # level weights are unbounded; a clear frontal face scores well above 1


def test_face_crop_is_found_by_both(detector: FaceDetector) -> None:
    crop = face_crop()
    (det,) = detector.detect(crop)
    assert iou(det.box, (FACE_BOX[0] - 150, FACE_BOX[1] - 40, FACE_BOX[2], FACE_BOX[3])) > 0.5


@pytest.mark.parametrize("convert", [cv2.COLOR_BGR2GRAY, cv2.COLOR_BGR2BGRA], ids=["gray", "bgra"])
def test_gray_and_bgra_input(detector: FaceDetector, convert: int) -> None:
    image = cv2.cvtColor(face_photo(), convert)
    detections = detector.detect(image)
    assert len(detections) == 1 and iou(detections[0].box, FACE_BOX) > 0.5
    if image.ndim == 2:  # (H, W, 1) is gray too
        (det,) = detector.detect(image[:, :, None])
        assert det.box == detections[0].box


@pytest.mark.parametrize("kind", ["zeros", "uniform", "noise"])
def test_no_face_gives_empty_list(detector: FaceDetector, kind: str) -> None:
    if kind == "zeros":
        image = np.zeros((480, 640, 3), np.uint8)
    elif kind == "uniform":
        image = np.full((480, 640, 3), 200, np.uint8)
    else:
        image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect(image) == []


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (31, 17), (2, 2, 4), (8, 200, 3), (100, 17, 3), (32, 640)])
def test_tiny_and_thin_blank_images_give_nothing(detector: FaceDetector, shape: tuple[int, ...]) -> None:
    """Raw OpenCV YuNet returns inf boxes or a phantom face (score ~0.95) here now and then: a side <= 32 px."""
    for _ in range(5):  # the garbage is intermittent (uninitialised memory), so one call proves little
        assert detector.detect(np.zeros(shape, np.uint8)) == []


@requires_yunet
@pytest.mark.parametrize("side", [48, 32])
def test_yunet_finds_the_face_in_tiny_crops(yunet: YuNetDetector, side: int) -> None:
    """FER2013-sized crops (48x48) still work although YuNet's input is padded to 64 px."""
    crop = cv2.resize(face_crop(), (side, side), interpolation=cv2.INTER_AREA)
    detections = yunet.detect(crop)
    assert_valid(detections, crop)
    assert len(detections) == 1
    expected = scaled_box((FACE_BOX[0] - 150, FACE_BOX[1] - 40, FACE_BOX[2], FACE_BOX[3]), side / 150, 0, 0)
    assert iou(detections[0].box, expected) > 0.5


# --- Scale: big photos, small faces, several faces -----------------------------------------------------------


@pytest.mark.parametrize("max_side", [1280, None], ids=["downscaled", "full-size"])
def test_large_photo_box_in_original_pixels(detector: FaceDetector, max_side: int | None) -> None:
    image = on_canvas(face_photo(), 2.0, (1080, 1920), at=(400, 50))
    expected = scaled_box(FACE_BOX, 2.0, 400, 50)
    detector = create_detector(detector.name, **_same_options(detector), max_side=max_side)
    detections = detector.detect(image)
    assert_valid(detections, image)
    assert iou(detections[0].box, expected) > 0.5
    # YuNet: only the face. Haar also fires weakly on the spacesuit at this scale (a ~50 px box, score ~1 vs ~5
    # for the face); the face is still its clear top detection.
    if detector.name == "yunet":
        assert len(detections) == 1
    else:
        assert all(d.score < detections[0].score / 2 for d in detections[1:])


@requires_yunet
def test_max_side_trades_tiny_faces_for_speed() -> None:
    """A 14 px face in a 2560x1280 frame is 7 px after the default downscale: below YuNet's ~10 px floor."""
    scale = 14 / FACE_BOX[2]
    image = on_canvas(face_photo(), scale, (1280, 2560), at=(1200, 600))
    assert YuNetDetector(model_path=yunet_model_file()).detect(image) == []
    (det,) = YuNetDetector(model_path=yunet_model_file(), max_side=None).detect(image)
    assert iou(det.box, scaled_box(FACE_BOX, scale, 1200, 600)) > 0.5


def _same_options(detector: FaceDetector) -> dict[str, object]:
    return {"model_path": detector.model_path} if isinstance(detector, YuNetDetector) else {}


def test_haar_min_size_is_in_original_pixels_when_downscaled() -> None:
    """The face is ~190 px in the 1920x1080 frame, ~127 px after the downscale to 1280."""
    image = on_canvas(face_photo(), 2.0, (1080, 1920), at=(400, 50))
    expected = scaled_box(FACE_BOX, 2.0, 400, 50)
    found = HaarDetector(min_size=150).detect(image)  # 150 px original = 100 px searched: the face qualifies
    assert len(found) == 1 and iou(found[0].box, expected) > 0.5  # and the ~50 px false positive is gone
    assert HaarDetector(min_size=250).detect(image) == []


@pytest.mark.parametrize("face_width", [40, 20, 14])
def test_yunet_finds_small_faces(yunet: YuNetDetector, face_width: int) -> None:
    """YuNet's floor on this photo is ~10 px face width (score ~0.70); 14 px keeps a margin (score ~0.8)."""
    scale = face_width / FACE_BOX[2]
    image = on_canvas(face_photo(), scale, (480, 640), at=(200, 100))
    detections = yunet.detect(image)
    assert len(detections) == 1
    assert iou(detections[0].box, scaled_box(FACE_BOX, scale, 200, 100)) > 0.5


@pytest.mark.parametrize("face_width", [40, 30])
def test_haar_finds_small_faces(face_width: int) -> None:
    """The default cascade's window is 24x24, so ~25 px is Haar's floor whatever min_size says."""
    scale = face_width / FACE_BOX[2]
    image = on_canvas(face_photo(), scale, (480, 640), at=(200, 100))
    detections = HaarDetector(min_size=16).detect(image)
    assert len(detections) == 1
    assert iou(detections[0].box, scaled_box(FACE_BOX, scale, 200, 100)) > 0.5


def test_haar_min_size_filters_small_faces() -> None:
    image = on_canvas(face_photo(), 40 / FACE_BOX[2], (480, 640), at=(200, 100))
    assert HaarDetector(min_size=64).detect(image) == []


def test_two_faces_sorted_by_score(detector: FaceDetector) -> None:
    photo = face_photo()
    image = np.concatenate([photo, photo], axis=1)
    detections = detector.detect(image)
    assert_valid(detections, image)
    assert len(detections) == 2
    lefts = sorted(d.box[0] for d in detections)
    assert lefts[0] < 512 <= lefts[1]
    for det in detections:
        x_offset = 0 if det.box[0] < 512 else 512
        assert iou(det.box, (FACE_BOX[0] + x_offset, *FACE_BOX[1:])) > 0.5


@requires_yunet
def test_boxes_are_clipped_to_the_image(yunet: YuNetDetector) -> None:
    """YuNet reports a face cut by the frame edge with a box starting outside it (x ~ -10 here); it is clipped.

    (Haar only finds whole faces, so it never needs clipping: it finds nothing in this crop.)
    """
    image = face_photo()[90:, 200:].copy()  # cuts the face's top and left
    detections = yunet.detect(image)
    assert_valid(detections, image)
    assert len(detections) == 1 and detections[0].box[0] == 0
    assert iou(detections[0].box, (0, 0, FACE_BOX[0] + FACE_BOX[2] - 200, FACE_BOX[1] + FACE_BOX[3] - 90)) > 0.5


@requires_yunet
def test_yunet_frame_size_changes(yunet: YuNetDetector) -> None:
    """The detector is reused across frame sizes; a size change must not leave a stale input size behind."""
    photo = face_photo()
    first = yunet.detect(photo)
    half = yunet.detect(cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA))
    again = yunet.detect(photo)
    assert first == again
    assert len(half) == 1 and iou(half[0].box, scaled_box(FACE_BOX, 0.5, 0, 0)) > 0.5


# --- WholeImageDetector and create_detector ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(48, 48), (150, 120, 3), (10, 20, 4)])
def test_whole_image_detector(shape: tuple[int, ...]) -> None:
    detector = WholeImageDetector()
    assert detector.name == "none"
    assert detector.detect(np.zeros(shape, np.uint8)) == [Detection(box=(0, 0, shape[1], shape[0]), score=1.0)]


def test_create_detector_by_name() -> None:
    assert isinstance(create_detector("none"), WholeImageDetector)
    haar = create_detector(" HAAR ", min_size=40, max_side=None)
    assert isinstance(haar, HaarDetector) and haar.min_size == 40 and haar.max_side is None
    assert isinstance(haar, FaceDetector)


@requires_yunet
def test_create_detector_yunet() -> None:
    detector = create_detector("yunet", model_path=yunet_model_file(), score_threshold=0.8)
    assert isinstance(detector, YuNetDetector) and detector.name == "yunet" and detector.score_threshold == 0.8
    assert create_detector(model_path=yunet_model_file()).name == "yunet"  # the default


def test_create_detector_passes_instances_through() -> None:
    detector = WholeImageDetector()
    assert create_detector(detector) is detector

    class Custom:
        name = "custom"

        def detect(self, image: np.ndarray) -> list[Detection]:
            return []

    custom = Custom()
    assert create_detector(custom) is custom
    with pytest.raises(TypeError, match="only apply"):
        create_detector(custom, min_size=3)
    with pytest.raises(TypeError, match="FaceDetector"):
        create_detector(42)  # type: ignore[arg-type]


def test_create_detector_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="mtcnn") as info:
        create_detector("mtcnn")
    for name in ("haar", "yunet", "none"):
        assert name in str(info.value)


def test_invalid_constructor_options() -> None:
    with pytest.raises(ValueError, match="max_side"):
        HaarDetector(max_side=0)
    with pytest.raises(ValueError, match="scale_factor"):
        HaarDetector(scale_factor=1.0)
    with pytest.raises(ValueError, match="score_threshold"):
        YuNetDetector(model_path=__file__, score_threshold=1.5)


def test_unknown_yunet_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="opencv"):
        YuNetDetector(model_path=__file__, runtime="tensorrt")


@pytest.mark.parametrize("runtime", ["onnxruntime", "opencv"])
def test_unreadable_yunet_model_is_explained(runtime: str, tmp_path: Path) -> None:
    broken = tmp_path / "yunet.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(DetectorUnavailable, match=re.escape(str(broken))) as info:
        YuNetDetector(model_path=broken, runtime=runtime)
    assert runtime in str(info.value) and "haar" in str(info.value)


def _yunet_outputs(padded_hw: tuple[int, int]) -> list[np.ndarray]:
    """YuNet-shaped raw outputs (cls, obj, bbox, kps per stride 8, 16, 32) with every score at zero."""
    outputs: list[list[np.ndarray]] = [[], [], [], []]
    for stride in (8, 16, 32):
        anchors = (padded_hw[0] // stride) * (padded_hw[1] // stride)
        for kind, width in enumerate((1, 1, 4, 10)):
            outputs[kind].append(np.zeros((1, anchors, width), np.float32))
    return [array for kind in outputs for array in kind]


def test_decode_yunet_places_an_anchor_as_opencv_does() -> None:
    """One stride-16 anchor at row 2, column 3 of a 64x96 input: centre (col + dx, row + dy) * stride, size
    exp(dw, dh) * stride, landmarks (col + kx, row + ky) * stride, score sqrt(cls * obj), clamped to [0, 1]."""
    outputs = _yunet_outputs((64, 96))
    index = 2 * (96 // 16) + 3
    outputs[1][0, index, 0] = 0.81  # cls_16
    outputs[4][0, index, 0] = 1.7  # obj_16, clamped to 1
    outputs[7][0, index] = [0.5, 0.25, np.log(2.0), np.log(3.0)]  # bbox_16
    outputs[10][0, index] = np.arange(10, dtype=np.float32) / 10  # kps_16
    (face,) = decode_yunet(outputs, (64, 96), score_threshold=0.6, nms_threshold=0.3, top_k=5000)
    centre_x, centre_y, width, height = (3 + 0.5) * 16, (2 + 0.25) * 16, 2.0 * 16, 3.0 * 16
    np.testing.assert_allclose(face[:4], [centre_x - width / 2, centre_y - height / 2, width, height], rtol=1e-6)
    np.testing.assert_allclose(face[4:14:2], (3 + np.arange(0, 10, 2) / 10) * 16, rtol=1e-6)
    np.testing.assert_allclose(face[5:14:2], (2 + np.arange(1, 10, 2) / 10) * 16, rtol=1e-6)
    assert face[14] == pytest.approx(0.9)
    assert decode_yunet(outputs, (64, 96), score_threshold=0.95, nms_threshold=0.3, top_k=5000).shape == (0, 15)


def test_decode_yunet_suppresses_overlapping_boxes() -> None:
    """Two neighbouring stride-8 anchors that see the same face give one detection, the more confident."""
    outputs = _yunet_outputs((64, 64))
    for index, score in ((9, 0.7), (10, 0.8)):
        outputs[0][0, index, 0] = outputs[3][0, index, 0] = score
        outputs[6][0, index] = [0.0, 0.0, np.log(4.0), np.log(4.0)]  # 32 px boxes 8 px apart
    faces = decode_yunet(outputs, (64, 64), score_threshold=0.6, nms_threshold=0.3, top_k=5000)
    assert len(faces) == 1 and faces[0, 14] == pytest.approx(0.8)
    assert len(decode_yunet(outputs, (64, 64), score_threshold=0.6, nms_threshold=0.9, top_k=5000)) == 2


@requires_yunet
def test_yunet_runtimes_agree_on_many_faces() -> None:
    """onnxruntime and OpenCV find the same faces, boxes and eyes in a photo of 8 faces from 24 to 160 px wide."""
    photo = face_photo()
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    x = 0
    for width in (24, 32, 48, 64, 80, 100, 128, 160):
        scale = width / FACE_BOX[2]
        side = round(photo.shape[0] * scale)
        tile = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)[:min(side, 300)]
        canvas[:tile.shape[0], x:x + min(side, 1280 - x)] = tile[:, :min(side, 1280 - x)]
        x += round(side * 0.45)
    default = YuNetDetector(model_path=yunet_model_file())
    assert default.runtime == "onnxruntime"  # the faster runtime is the default
    fast = default.detect(canvas)
    reference = YuNetDetector(model_path=yunet_model_file(), runtime="opencv").detect(canvas)
    assert len(fast) >= 6
    assert [d.box for d in fast] == [d.box for d in reference]
    np.testing.assert_allclose([d.score for d in fast], [d.score for d in reference], atol=1e-4)
    np.testing.assert_allclose([d.eyes for d in fast], [d.eyes for d in reference], atol=0.05)


def test_missing_haar_cascade_is_explained() -> None:
    with pytest.raises(DetectorUnavailable, match="no_such_cascade.xml") as info:
        HaarDetector(cascade="no_such_cascade.xml")
    assert "opencv-python-headless" in str(info.value) and "<5" in str(info.value)


# --- Input validation ----------------------------------------------------------------------------------------


@pytest.fixture(params=["haar", "yunet", "yunet_opencv", "none"])
def any_detector(request: pytest.FixtureRequest) -> FaceDetector:
    return WholeImageDetector() if request.param == "none" else _named(request, request.param)


def test_rejects_non_uint8(any_detector: FaceDetector) -> None:
    with pytest.raises(TypeError, match=r"uint8.*float32.*\(32, 32, 3\)"):
        any_detector.detect(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        any_detector.detect([[0, 1], [2, 3]])  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(32, 32, 2), (32, 32, 5), (2, 32, 32, 3), (32,), (0, 32, 3)])
def test_rejects_bad_shapes(any_detector: FaceDetector, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        any_detector.detect(np.zeros(shape, np.uint8))


# --- YuNet model resolution ----------------------------------------------------------------------------------


@pytest.fixture
def no_env_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An installation without the packaged model, no YUNET_ENV and an empty cache: the only way left is the
    download. Returns the cache file."""
    import os

    import fer_lightning.inference.detectors as detectors

    monkeypatch.delenv(YUNET_ENV, raising=False)
    monkeypatch.setattr(detectors, "PACKAGED_YUNET", tmp_path / "stripped_install" / "face_detection_yunet.onnx")
    return Path(os.environ["FER_LIGHTNING_CACHE"]) / "models" / CACHED_NAME


def _no_network(url: str, timeout: float | None = None) -> io.BytesIO:
    raise AssertionError(f"no download may be attempted: {url}")


def test_the_packaged_model_is_used_offline_without_any_setting(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """A fresh install, no network, no variable, an empty cache: YuNet, from the package, with no warning."""
    import warnings

    from fer_lightning.assets import YUNET_MODEL_FILE

    monkeypatch.delenv(YUNET_ENV, raising=False)
    monkeypatch.setenv("FER_LIGHTNING_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert yunet_model_path() == YUNET_MODEL_FILE and yunet_model_path(download=False) == YUNET_MODEL_FILE
    assert YUNET_MODEL_FILE.parent.name == "assets" and YUNET_MODEL_FILE.stat().st_size > 200_000
    from fer_lightning.inference.recognizer import _make_detector

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the Haar fallback warns: it must not happen
        detector = _make_detector("auto", {})
    assert detector.name == "yunet" and detector.model_path == YUNET_MODEL_FILE
    assert len(detector.detect(face_photo())) == 1
    assert not (tmp_path / "empty_cache").exists()  # nothing downloaded or cached


def test_the_packaged_model_carries_its_licence_notice() -> None:
    import hashlib

    from fer_lightning.assets import ASSETS_DIR, YUNET_MODEL_FILE

    notice = (ASSETS_DIR / "YUNET_LICENSE.txt").read_text()
    payload = YUNET_MODEL_FILE.read_bytes()
    assert hashlib.sha256(payload).hexdigest() in notice and f"{len(payload):,} bytes" in notice
    assert "MIT License" in notice and "Copyright (c) 2020 Shiqi Yu" in notice and YUNET_MODEL_FILE.name in notice
    shared = Path(__file__).resolve().parents[2] / "shared" / "models" / "face_detection_yunet.onnx"
    if shared.is_file():  # the one file ../shared allows into the package, copied unchanged
        assert shared.read_bytes() == payload


def test_explicit_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "yunet.onnx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        yunet_model_path(missing)


def test_env_var_to_missing_file_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "gone.onnx"
    monkeypatch.setenv(YUNET_ENV, str(missing))
    with pytest.raises(FileNotFoundError) as info:
        yunet_model_path()
    assert YUNET_ENV in str(info.value) and str(missing) in str(info.value)


@requires_yunet
def test_env_var_to_real_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(YUNET_ENV, yunet_model_file())
    assert yunet_model_path() == Path(yunet_model_file())
    detector = YuNetDetector(download=False)
    assert detector.model_path == Path(yunet_model_file())
    assert len(detector.detect(face_photo())) == 1


@requires_yunet
def test_explicit_path_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(YUNET_ENV, str(tmp_path / "gone.onnx"))  # would fail if it were consulted
    assert yunet_model_path(yunet_model_file()) == Path(yunet_model_file())


def test_no_model_and_no_download(no_env_model: Path) -> None:
    with pytest.raises(DetectorUnavailable, match="download=False") as info:
        yunet_model_path(download=False)
    message = str(info.value)
    assert "haar" in message and "model_path" in message and YUNET_ENV in message
    assert "missing from this installation" in message and "reinstall" in message
    with pytest.raises(DetectorUnavailable):
        YuNetDetector(download=False)


def test_download_failure_is_explained(no_env_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float | None = None) -> io.BytesIO:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DetectorUnavailable) as info:
        YuNetDetector()
    message = str(info.value)
    assert YUNET_URL in message and "name resolution" in message
    assert "haar" in message and "model_path" in message and YUNET_ENV in message
    assert not no_env_model.exists()
    assert list(no_env_model.parent.iterdir()) == []  # no temp file left behind


@requires_yunet
def test_download_lands_in_cache_atomically(no_env_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = Path(yunet_model_file()).read_bytes()
    calls: list[tuple[str, float | None]] = []

    def serve(url: str, timeout: float | None = None) -> io.BytesIO:
        calls.append((url, timeout))
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    detector = YuNetDetector()
    assert calls == [(YUNET_URL, calls[0][1])] and calls[0][1] is not None and calls[0][1] <= 10
    assert detector.model_path == no_env_model
    assert no_env_model.read_bytes() == payload
    assert [p.name for p in no_env_model.parent.iterdir()] == [CACHED_NAME]
    assert len(detector.detect(face_photo())) == 1

    def fail(url: str, timeout: float | None = None) -> io.BytesIO:
        raise AssertionError("the cached model must be used without a download")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    assert yunet_model_path() == no_env_model
    assert yunet_model_path(download=False) == no_env_model


def test_corrupt_download_is_not_cached(no_env_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A captive portal or error page served with HTTP 200 must not become the cached 'model'."""
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>login</html>"))
    with pytest.raises(DetectorUnavailable, match="not a loadable ONNX model"):
        yunet_model_path()
    assert list(no_env_model.parent.iterdir()) == []


# --- Import contract -----------------------------------------------------------------------------------------


def test_module_does_not_import_torch() -> None:
    """The onnxruntime inference path imports this module on machines without torch."""
    code = "import sys, fer_lightning.inference.detectors; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# --- Detection on an enlarged frame (detect_upscale) ---------------------------------------------------------------


@requires_yunet
@pytest.mark.parametrize("runtime", YUNET_RUNTIMES)
def test_upscale_finds_a_face_too_small_for_the_full_frame_and_reports_it_in_original_pixels(runtime: str) -> None:
    crop = face_photo()[35:205, 150:300]  # the astronaut's face, about 90 px wide in this crop
    canvas = np.full((240, 320, 3), (90, 110, 130), np.uint8)
    tile = cv2.resize(crop, None, fx=16 / 90, fy=16 / 90, interpolation=cv2.INTER_AREA)  # a 16 px face
    canvas[100:100 + tile.shape[0], 150:150 + tile.shape[1]] = tile
    assert YuNetDetector(model_path=yunet_model_file(), runtime=runtime).detect(canvas) == []
    (face,) = YuNetDetector(model_path=yunet_model_file(), runtime=runtime, upscale=2).detect(canvas)
    x, y, w, h = face.box
    assert 150 <= x <= 160 and 100 <= y <= 110 and 12 <= w <= 20  # where the face is, in the frame's pixels
    (xr, yr), (xl, yl) = face.eyes
    assert x < xr < xl < x + w and y < yr < y + h  # the eyes map back too


def test_upscale_applies_after_max_side_and_is_bounded() -> None:
    from fer_lightning.inference.detectors import _detection_image

    big = np.zeros((1000, 2000, 3), np.uint8)
    shrunk, scale = _detection_image(big, 1280, 1.0)
    assert shrunk.shape[:2] == (640, 1280) and scale == pytest.approx(0.64)
    enlarged, scale = _detection_image(big, 1280, 2.0)
    assert enlarged.shape[:2] == (1280, 2560) and scale == pytest.approx(1.28)
    small = np.zeros((100, 200, 3), np.uint8)
    assert _detection_image(small, 1280, 1.0)[0] is small
    assert _detection_image(small, 1280, 1.5)[0].shape[:2] == (150, 300)
    for upscale in (0.5, 5):
        with pytest.raises(ValueError, match="upscale must be between 1 and 4"):
            HaarDetector(upscale=upscale)
