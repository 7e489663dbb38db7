"""The model shipped inside the package: present, small, consistent, and as accurate as its model card says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import face_photo, load_experiment_script, real_fer2013_root, requires_fer2013

from fer_lightning.assets import ASSETS_DIR, SHIPPED_MODEL_STEM, shipped_model_file
from fer_lightning.inference.classifier import TorchEmotionClassifier, load_classifier
from fer_lightning.inference.onnx_runtime import OnnxEmotionClassifier
from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.labels import EMOTIONS, TEST, VAL

CARD = json.loads((ASSETS_DIR / f"{SHIPPED_MODEL_STEM}.json").read_text())


def test_shipped_files_are_small_and_described() -> None:
    for kind in ("ckpt", "onnx"):
        path = shipped_model_file(kind)
        assert path.stat().st_size < 5_000_000
        assert CARD["files"][kind] == {"name": path.name, "bytes": path.stat().st_size}  # card matches the file
    card_text = (ASSETS_DIR / "MODEL_CARD.md").read_text()
    priv = CARD["evaluation"]["ckpt"]["PrivateTest"]["acc"]
    assert f"{priv:.2%}" in card_text and "PublicTest" in card_text and CARD["command"] in card_text
    with pytest.raises(ValueError, match="kind"):
        shipped_model_file("pt")


def test_checkpoint_and_onnx_give_the_same_probabilities() -> None:
    torch_model = load_classifier(shipped_model_file("ckpt"))
    onnx_model = load_classifier(shipped_model_file("onnx"))
    assert isinstance(torch_model, TorchEmotionClassifier) and isinstance(onnx_model, OnnxEmotionClassifier)
    assert torch_model.class_names == onnx_model.class_names == tuple(EMOTIONS)
    faces = np.random.default_rng(0).integers(0, 256, size=(16, 48, 48), dtype=np.uint8)
    recognizers = [EmotionRecognizer(m, detector="none") for m in (torch_model, onnx_model)]
    a, b = (r.predict_faces(list(faces)) for r in recognizers)
    assert np.abs(a - b).max() < 1e-5


def test_default_recognizer_uses_the_shipped_onnx_model_and_reads_a_smile() -> None:
    recognizer = EmotionRecognizer.from_checkpoint(detector="haar")
    assert isinstance(recognizer.classifier, OnnxEmotionClassifier)
    (face,) = recognizer.predict(face_photo())
    assert face.label == "happy" and face.confidence > 0.5  # the astronaut is smiling


def test_cli_works_without_a_checkpoint_argument(tmp_path) -> None:
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), face_photo())
    result = subprocess.run([sys.executable, "-m", "fer_lightning.predict", f"input={photo}",
                             f"output={tmp_path / 'out'}", "detector=haar"], capture_output=True, text=True,
                            env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert record["label"] == "happy"


@requires_fer2013
@pytest.mark.parametrize("kind", ["ckpt", "onnx"])
def test_accuracy_on_real_fer2013_matches_the_model_card(kind) -> None:
    from fer_lightning.data.datamodule import load_fer2013

    arrays = load_fer2013(real_fer2013_root())
    recognizer = EmotionRecognizer.from_checkpoint(shipped_model_file(kind), detector="none")
    for split, code in (("PublicTest", VAL), ("PrivateTest", TEST)):
        images, labels = arrays.images[arrays.splits == code], arrays.labels[arrays.splits == code]
        predicted = np.concatenate([recognizer.predict_faces(list(images[i:i + 512])).argmax(1)
                                    for i in range(0, len(images), 512)])
        assert float((predicted == labels).mean()) == pytest.approx(CARD["evaluation"][kind][split]["acc"], abs=1e-9)
    assert CARD["evaluation"][kind]["PrivateTest"]["acc"] > 0.6


def test_card_reports_faces_from_elsewhere() -> None:
    """The card states the CK+ dev numbers it holds; a card without them says they were not measured."""
    card_text = (ASSETS_DIR / "MODEL_CARD.md").read_text()
    ck = CARD["evaluation"]["ckpt"]["CK+ dev"]
    assert f"**{ck['acc']:.2%}**" in card_text and "## Faces from elsewhere" in card_text
    assert all(f"{name} {acc:.1%}" in card_text for name, acc in ck["acc_per_class"].items())
    ship_model = load_experiment_script("experiments/inference/ship_model.py")
    without = json.loads(json.dumps(CARD))
    for kind in ("ckpt", "onnx"):
        del without["evaluation"][kind]["CK+ dev"]
    assert "Not measured for this file" in ship_model.render_card(without)
    assert ship_model.render_card(CARD) == card_text  # the committed card is what the script renders


def test_card_names_the_teachers_of_a_distilled_model() -> None:
    ship_model = load_experiment_script("experiments/inference/ship_model.py")
    distilled = dict(CARD, distill={"teachers": ["teacher_a.ckpt", "teacher_b.ckpt"], "temperature": 4.0,
                                    "weight": 0.5})
    text = ship_model.render_card(distilled)
    assert "Distilled from `teacher_a.ckpt`, `teacher_b.ckpt` (temperature 4.0, weight 0.5" in text
    assert "Distilled" not in ship_model.render_card(dict(CARD, distill=None))


def test_card_states_the_network_arguments_the_class_balance_and_its_measured_weak_spots() -> None:
    ship_model = load_experiment_script("experiments/inference/ship_model.py")
    text = ship_model.render_card(CARD)
    assert all(f"{key}={value}" in text for key, value in CARD["net_kwargs"].items())
    power = CARD["loss"]["class_weight_power"]
    assert CARD["loss"]["class_weighted"] and f"inverse class frequency to the power {power}" in text
    plain = ship_model.render_card(dict(CARD, net_kwargs={}, loss=dict(CARD["loss"], class_weighted=False)))
    assert f"(`{CARD['backbone']}`, " in plain and "weighted per class" not in plain
    # the weakest class and the mistakes come from the card's measurements, not from a sentence written once
    card = json.loads(json.dumps(CARD))
    card["evaluation"]["ckpt"]["PublicTest"]["acc_per_class"]["surprise"] = 0.1
    card["evaluation"]["ckpt"]["PrivateTest"]["confusions"] = [{"class": "happy", "read_as": "sad", "share": 0.3}]
    text = ship_model.render_card(card)
    assert "Surprise is the weakest class (10.0% PublicTest" in text and "happy read as sad 30%" in text


@pytest.mark.skipif(not os.environ.get("CKPLUS_ROOT"), reason="CKPLUS_ROOT is not set (CK+ dev not available)")
@pytest.mark.parametrize("kind", ["ckpt", "onnx"])
def test_accuracy_on_ckplus_dev_matches_the_model_card(kind) -> None:
    from fer_lightning.data.folder_faces import read_labelled_folder
    from fer_lightning.metrics import present_class_metrics

    faces = read_labelled_folder(os.environ["CKPLUS_ROOT"], {"anger": "angry", "sadness": "sad", "contempt": None})
    recognizer = EmotionRecognizer.from_checkpoint(shipped_model_file(kind), detector="none")
    metrics = present_class_metrics(recognizer.predict_faces(list(faces.images)), faces.labels, EMOTIONS, "ck")
    card = CARD["evaluation"][kind]["CK+ dev"]
    assert card["n"] == len(faces.labels) and card["dropped"] == faces.dropped
    assert metrics["ck/acc"] == pytest.approx(card["acc"], abs=1e-9)
    assert {name: metrics[f"ck/acc_{name}"] for name in faces.classes} == pytest.approx(card["acc_per_class"])
