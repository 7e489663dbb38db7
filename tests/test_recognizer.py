"""EmotionRecognizer: one record per face, training-identical preprocessing, options, and bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import YUNET_ENV, face_crop, face_photo, requires_yunet, yunet_model_file

from fer_lightning.inference.classifier import TorchEmotionClassifier
from fer_lightning.inference.detectors import Detection
from fer_lightning.inference.recognizer import EmotionRecognizer, FaceRecord
from fer_lightning.labels import EMOTIONS
from fer_lightning.preprocessing import face_to_fer, square_box

PHOTO_FACE = (178, 63, 90, 113)  # the astronaut's face as YuNet boxes it


class CountingClassifier:
    """Wraps a real classifier and records every batch it is given."""

    def __init__(self, inner: TorchEmotionClassifier) -> None:
        self.inner = inner
        self.class_names = inner.class_names
        self.eval_transform = inner.eval_transform
        self.batches: list[int] = []

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        self.batches.append(len(faces))
        return self.inner.predict_proba(faces)


class FixedDetector:
    name = "fixed"

    def __init__(self, boxes: list[tuple[int, int, int, int]]) -> None:
        self.boxes = boxes
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        return [Detection(box=b, score=0.9) for b in self.boxes]


@pytest.fixture(scope="module")
def classifier(trained_checkpoint) -> TorchEmotionClassifier:
    return TorchEmotionClassifier.from_checkpoint(trained_checkpoint)


def _recognizer(classifier, detector="haar", **options) -> EmotionRecognizer:
    return EmotionRecognizer(CountingClassifier(classifier), detector=detector, **options)


def _two_faces() -> np.ndarray:
    """The photo at full size next to a half-size copy: two faces of different sizes."""
    photo = face_photo()
    canvas = np.full((512, 800, 3), 120, np.uint8)
    canvas[:, :512] = photo
    canvas[:256, 530:786] = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
    return canvas


def test_preprocessing_parity_with_the_lightning_module(trained_run) -> None:
    """The recogniser and the trained LightningModule give the same probabilities for the same 48x48 faces."""
    loader = trained_run.datamodule.test_dataloader()  # exactly what Trainer.test fed the model
    images = loader.dataset.images  # in the loader's (class-stratified) order
    batch, _ = next(iter(loader))
    model = trained_run.model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(batch), dim=1).numpy()
    recognizer = EmotionRecognizer.from_checkpoint(trained_run.checkpoint, detector="none")
    for i in range(8):
        gray = images[i]
        for image in (gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)):  # as a dataset array and as a BGR photo
            (record,) = recognizer.predict(image, face_crop=True)
            got = np.array([record.probs[name] for name in EMOTIONS])
            np.testing.assert_allclose(got, expected[i], atol=1e-6, rtol=0)
            assert record.box == (0, 0, 48, 48) and record.label == EMOTIONS[int(expected[i].argmax())]


def test_a_face_crop_of_another_size_is_brought_to_48x48_like_fer2013(classifier) -> None:
    crop = face_crop()
    recognizer = _recognizer(classifier, detector="none")
    (record,) = recognizer.predict(crop, face_crop=True)
    expected = recognizer.predict_faces([cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (48, 48),
                                                    interpolation=cv2.INTER_AREA)])[0]
    np.testing.assert_allclose([record.probs[n] for n in EMOTIONS], expected, atol=1e-6)
    assert record.box == (0, 0, crop.shape[1], crop.shape[0])


def test_one_record_per_face_and_all_faces_in_one_batch(classifier) -> None:
    recognizer = _recognizer(classifier, detector="haar")
    records = recognizer.predict(_two_faces())
    assert len(records) == 2
    assert recognizer.classifier.batches == [2]
    for record in records:
        assert isinstance(record, FaceRecord)
        assert set(record.probs) == set(EMOTIONS) and abs(sum(record.probs.values()) - 1) < 1e-5
        assert record.label == max(record.probs, key=record.probs.get)
        assert record.to_dict()["box"] == list(record.box)
    widths = sorted(r.box[2] for r in records)
    assert widths[1] > 1.6 * widths[0]  # the half-size copy is found as such


def test_largest_only_and_min_face_size(classifier) -> None:
    image = _two_faces()
    (largest,) = _recognizer(classifier, largest_only=True).predict(image)
    assert largest.box[2] > 80  # the full-size face, not the half-size one
    big_only = _recognizer(classifier, min_face_size=70).predict(image)
    assert [r.box for r in big_only] == [largest.box]
    assert _recognizer(classifier, min_face_size=400).predict(image) == []


def test_caller_boxes_skip_the_detector(classifier) -> None:
    detector = FixedDetector([])
    recognizer = _recognizer(classifier, detector=detector)
    records = recognizer.predict(face_photo(), boxes=[PHOTO_FACE, (10, 10, 60, 60)])
    assert detector.calls == 0
    assert [r.box for r in records] == [PHOTO_FACE, (10, 10, 60, 60)] and all(r.score == 1.0 for r in records)
    assert recognizer.classifier.batches == [2]


def test_margin_changes_the_crop_the_classifier_sees(classifier) -> None:
    photo = face_photo()
    tight = _recognizer(classifier, detector=FixedDetector([PHOTO_FACE]), margin=0.0).predict(photo)[0]
    wide = _recognizer(classifier, detector=FixedDetector([PHOTO_FACE]), margin=0.4).predict(photo)[0]
    assert tight.box == wide.box == PHOTO_FACE  # the record keeps the detector's box
    assert max(abs(tight.probs[n] - wide.probs[n]) for n in EMOTIONS) > 1e-4
    # the crop is the squared box grown by the margin on each side
    assert square_box(PHOTO_FACE, 0.4)[2] == round(113 * 1.8)


def test_crop_near_the_border_is_padded_not_shifted() -> None:
    image = np.zeros((100, 100), np.uint8)
    image[:, :50] = 200
    face = face_to_fer(image, (0, 0, 50, 100), margin=0.0)  # square box reaches x = -25
    assert face.shape == (48, 48)
    assert face[:, :12].mean() > 190  # the left padding replicates the bright border, not black


def test_no_face_gives_no_record(classifier) -> None:
    assert _recognizer(classifier).predict(np.full((480, 640, 3), 128, np.uint8)) == []


def test_gray_and_bgra_photos_work(classifier) -> None:
    photo = face_photo()
    recognizer = _recognizer(classifier, detector=FixedDetector([PHOTO_FACE]))
    bgr = recognizer.predict(photo)[0]
    gray = recognizer.predict(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))[0]
    bgra = recognizer.predict(cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA))[0]
    for other in (gray, bgra):
        np.testing.assert_allclose([other.probs[n] for n in EMOTIONS], [bgr.probs[n] for n in EMOTIONS], atol=1e-6)


def test_large_photo_with_one_large_face(classifier) -> None:
    canvas = np.full((1080, 1920, 3), 100, np.uint8)
    canvas[28:1052, 448:1472] = cv2.resize(face_photo(), (1024, 1024), interpolation=cv2.INTER_LINEAR)
    (record,) = _recognizer(classifier, detector="haar").predict(canvas)
    x, y, w, h = record.box
    assert 448 + 300 < x + w / 2 < 448 + 500 and 28 + 150 < y + h / 2 < 28 + 350 and w > 150


@requires_yunet
def test_small_face_with_yunet(classifier) -> None:
    canvas = np.full((480, 640, 3), 100, np.uint8)
    small = cv2.resize(face_photo(), (200, 200), interpolation=cv2.INTER_AREA)  # face about 35 px wide
    canvas[140:340, 220:420] = small
    records = _recognizer(classifier, detector="yunet",
                          detector_options={"model_path": yunet_model_file()}).predict(canvas)
    assert len(records) == 1 and 25 <= records[0].box[2] <= 50


def test_auto_detector_falls_back_to_haar_when_yunet_cannot_be_had(classifier, monkeypatch) -> None:
    import fer_lightning.inference.detectors as detectors

    monkeypatch.delenv(YUNET_ENV, raising=False)

    def offline(*args, **kwargs):
        raise detectors.DetectorUnavailable("no network (test)")

    monkeypatch.setattr(detectors, "yunet_model_path", offline)
    with pytest.warns(UserWarning, match="Haar"):
        recognizer = _recognizer(classifier, detector="auto")
    assert recognizer.detector.name == "haar"
    assert len(recognizer.predict(face_photo())) == 1


@pytest.mark.parametrize(("image", "error"), [
    (np.zeros((48, 48), np.float32), TypeError),
    (np.zeros((48, 48, 2), np.uint8), ValueError),
    (np.zeros((0, 48), np.uint8), ValueError),
    ("photo.jpg", TypeError),
])
def test_bad_images_are_rejected_clearly(classifier, image, error) -> None:
    with pytest.raises(error, match="image"):
        _recognizer(classifier).predict(image)


@pytest.mark.parametrize("box", [(700, 10, 50, 50), (10, 10, 0, 50), (1, 2, 3)])
def test_bad_boxes_are_rejected_clearly(classifier, box) -> None:
    with pytest.raises(ValueError, match="box"):
        _recognizer(classifier).predict(face_photo(), boxes=[box])


def test_boxes_and_face_crop_together_are_rejected(classifier) -> None:
    with pytest.raises(ValueError, match="either"):
        _recognizer(classifier).predict(face_photo(), boxes=[PHOTO_FACE], face_crop=True)


def test_options_are_validated(classifier) -> None:
    with pytest.raises(ValueError, match="margin"):
        _recognizer(classifier, margin=-0.1)
    with pytest.raises(ValueError, match="min_face_size"):
        _recognizer(classifier, min_face_size=-1)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        EmotionRecognizer.from_checkpoint("nope.ckpt", detector="none")
