"""Test-time augmentation, ensembles and `python -m fer_lightning.evaluate` (numbers, files, errors)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from conftest import TrainedRun, make_tiny_fer
from omegaconf import DictConfig

from fer_lightning.config import compose_config
from fer_lightning.evaluation import checkpoint_paths, evaluate, evaluate_splits
from fer_lightning.inference.classifier import TorchEmotionClassifier
from fer_lightning.labels import EMOTIONS
from fer_lightning.metrics import split_metrics
from fer_lightning.preprocessing import prepare_face
from fer_lightning.tta import (
    TTA_MODES,
    default_crop_size,
    ensemble_proba,
    predict_proba_tta,
    tta_views,
)

ROOT = Path(__file__).resolve().parents[1]


def _faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def _proba(classifier: TorchEmotionClassifier, face: np.ndarray) -> np.ndarray:
    """One face through the model on its own: the reference TTA must reproduce."""
    return classifier.predict_proba(prepare_face(face, classifier.eval_transform)[np.newaxis])[0]


@pytest.fixture(scope="module")
def classifier(trained_checkpoint: Path) -> TorchEmotionClassifier:
    return TorchEmotionClassifier.from_checkpoint(trained_checkpoint)


@pytest.fixture(scope="module")
def second_checkpoint(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`trained_checkpoint` with perturbed weights: a different model with the same classes and preprocessing."""
    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(0)
    for name, tensor in checkpoint["state_dict"].items():
        if tensor.is_floating_point() and name.startswith("net.") and tensor.ndim > 1:
            tensor.mul_(1 + 0.3 * torch.randn(tensor.shape, generator=generator))
    path = tmp_path_factory.mktemp("second") / "checkpoints" / "perturbed.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A tiny FER2013 CSV (it has the official PublicTest/PrivateTest split), and its splits in file order."""
    path = make_tiny_fer(tmp_path_factory.mktemp("tiny_fer"), per_class={"train": 1, "val": 3, "test": 4}).csv
    images: dict[str, list[np.ndarray]] = {"val": [], "test": []}
    labels: dict[str, list[int]] = {"val": [], "test": []}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            split = {"PublicTest": "val", "PrivateTest": "test"}.get(row["Usage"])
            if split:
                images[split].append(np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48))
                labels[split].append(int(row["emotion"]))
    return path, {s: np.stack(v) for s, v in images.items()}, {s: np.array(v) for s, v in labels.items()}


def compose_eval_cfg(output_dir: Path, overrides: list[str]) -> DictConfig:
    """The config `python -m fer_lightning.evaluate` would build, with the run dir pinned to `output_dir`."""
    return compose_config("eval", overrides, output_dir)


def _run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FER_LIGHTNING_CACHE": str(tmp_path / "cache"), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "fer_lightning.evaluate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


# --- Views ----------------------------------------------------------------------------------------------------

def test_tencrop_views_are_the_corners_the_centre_and_their_mirrors() -> None:
    face = np.zeros((48, 48), np.uint8)
    face[:24, :24], face[:24, 24:], face[24:, :24], face[24:, 24:] = 10, 20, 30, 40  # one value per quadrant
    face[22:26, 22:26] = 99  # a mark only the centre crop has at its centre
    views = tta_views(face, "tencrop", crop_size=40)
    assert len(views) == 10 and all(v.shape == (40, 40) and v.dtype == np.uint8 for v in views)
    # Corner crops (top-left, top-right, bottom-left, bottom-right) each hold their own quadrant whole.
    for view, (quadrant, corner) in zip(views[:4], [(10, (0, 0)), (20, (0, -1)), (30, (-1, 0)), (40, (-1, -1))]):
        assert view[corner] == quadrant and (view == quadrant).sum() == 24 * 24 - 4  # 2x2 of it is the mark
    assert (views[4][18:22, 18:22] == 99).all() and {views[4][0, 0], views[4][-1, -1]} == {10, 40}
    for original, mirrored in zip(views[:5], views[5:]):
        np.testing.assert_array_equal(mirrored, original[:, ::-1])
    random_face = _faces(1)[0]
    crops = tta_views(random_face, "tencrop")  # default 44: offsets 0, 4 and (48 - 44) // 2 = 2
    expected = [random_face[:44, :44], random_face[:44, 4:], random_face[4:, :44], random_face[4:, 4:],
                random_face[2:46, 2:46]]
    for view, region in zip(crops, expected + [r[:, ::-1] for r in expected]):
        np.testing.assert_array_equal(view, region)


def test_none_and_flip_views_and_bad_arguments() -> None:
    face = _faces(1)[0]
    assert len(tta_views(face, "none")) == 1 and tta_views(face, "none")[0] is face
    plain, mirrored = tta_views(face, "flip")
    np.testing.assert_array_equal(plain, face)
    np.testing.assert_array_equal(mirrored, np.fliplr(face))
    with pytest.raises(ValueError, match="unknown TTA mode 'flop'.*none, flip, tencrop"):
        tta_views(face, "flop")
    with pytest.raises(ValueError, match="crop_size 49 is larger than the 48x48 face"):
        tta_views(face, "tencrop", crop_size=49)
    with pytest.raises(ValueError, match="positive integer"):
        tta_views(face, "tencrop", crop_size=0)
    assert TTA_MODES == ("none", "flip", "tencrop")


# --- Model-level TTA --------------------------------------------------------------------------------------------

def test_flip_tta_is_the_mean_over_the_face_and_its_mirror(classifier: TorchEmotionClassifier) -> None:
    faces = _faces(6, seed=1)
    left = _faces(1, seed=2)[0][:, :24]
    symmetric = np.concatenate([left, left[:, ::-1]], axis=1)
    assert (symmetric == np.fliplr(symmetric)).all()
    np.testing.assert_allclose(predict_proba_tta(classifier, symmetric[None], "flip"),
                               predict_proba_tta(classifier, symmetric[None], "none"), atol=1e-6)
    flipped = predict_proba_tta(classifier, faces, "flip")
    expected = np.stack([(_proba(classifier, f) + _proba(classifier, np.fliplr(f))) / 2 for f in faces])
    np.testing.assert_allclose(flipped, expected, atol=1e-6)
    assert not np.allclose(flipped, predict_proba_tta(classifier, faces, "none"), atol=1e-4)  # it did something
    np.testing.assert_allclose(flipped.sum(axis=1), 1.0, atol=1e-5)


def _without_center_crop(classifier: TorchEmotionClassifier) -> TorchEmotionClassifier:
    """The same model with its eval transform minus any CenterCrop: what a ten-crop view replaces."""
    steps = [t for t in classifier.eval_transform.transforms if not isinstance(t, A.CenterCrop)]
    return TorchEmotionClassifier(classifier.model, classifier.class_names, A.Compose(steps))


def test_tencrop_batches_bound_memory_without_changing_results(classifier: TorchEmotionClassifier) -> None:
    faces = _faces(5, seed=3)
    whole = predict_proba_tta(classifier, faces, "tencrop", batch_size=512)
    tiny_batches = predict_proba_tta(classifier, faces, "tencrop", batch_size=3)  # fewer inputs than views
    np.testing.assert_allclose(whole, tiny_batches, atol=1e-6)
    reference = _without_center_crop(classifier)
    expected = np.mean([_proba(reference, v) for v in tta_views(faces[0], "tencrop", 44)], axis=0)
    np.testing.assert_allclose(whole[0], expected, atol=1e-6)
    assert predict_proba_tta(classifier, faces[:0], "tencrop").shape == (0, len(EMOTIONS))


def test_tencrop_crop_size_follows_the_eval_transforms_center_crop(classifier: TorchEmotionClassifier) -> None:
    """A model trained on random 40 px crops is evaluated on CenterCrop(40): its ten crops are 40 px too, and
    the CenterCrop is then a no-op. A CenterCrop(48) (whole face, the transforms' no-crop setting) means 44 px."""
    def with_crop(size: int) -> TorchEmotionClassifier:
        transform = A.Compose([A.CenterCrop(height=size, width=size), A.Resize(height=48, width=48),
                               A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])
        return TorchEmotionClassifier(classifier.model, classifier.class_names, transform)

    cropped, whole_face = with_crop(40), with_crop(48)
    assert default_crop_size(cropped.eval_transform) == 40 and default_crop_size(whole_face.eval_transform) == 44
    faces = _faces(2, seed=4)
    expected = np.mean([_proba(cropped, v) for v in tta_views(faces[1], "tencrop", 40)], axis=0)
    np.testing.assert_allclose(predict_proba_tta(cropped, faces, "tencrop")[1], expected, atol=1e-6)
    # Views smaller than the CenterCrop replace it (it could not crop them again); resize + normalise stay.
    for model, size in ((cropped, 36), (whole_face, None)):
        reference = _without_center_crop(model)
        expected = np.mean([_proba(reference, v) for v in tta_views(faces[0], "tencrop", size or 44)], axis=0)
        np.testing.assert_allclose(predict_proba_tta(model, faces, "tencrop", crop_size=size)[0], expected,
                                   atol=1e-6)


# --- Ensembles --------------------------------------------------------------------------------------------------

def test_ensemble_proba_averages_and_refuses_mismatches(classifier: TorchEmotionClassifier,
                                                        second_checkpoint: Path) -> None:
    other = TorchEmotionClassifier.from_checkpoint(second_checkpoint)
    faces = _faces(8, seed=5)
    a, b = predict_proba_tta(classifier, faces, "flip"), predict_proba_tta(other, faces, "flip")
    assert not np.allclose(a, b, atol=1e-3)  # two genuinely different models
    np.testing.assert_allclose(ensemble_proba([a, b]), (a.astype(np.float64) + b) / 2, atol=1e-7)
    np.testing.assert_array_equal(ensemble_proba([a]), a)
    with pytest.raises(ValueError, match="b.ckpt has"):
        ensemble_proba([a, b], [EMOTIONS, EMOTIONS[::-1]], ["a.ckpt", "b.ckpt"])
    with pytest.raises(ValueError, match=r"shape \(7, 7\)"):
        ensemble_proba([a, b[:7]], sources=["a.ckpt", "b.ckpt"])
    with pytest.raises(ValueError, match="at least one"):
        ensemble_proba([])


# --- Agreement with training ------------------------------------------------------------------------------------

def test_tta_none_reproduces_the_training_runs_metrics(trained_run: TrainedRun,
                                                       classifier: TorchEmotionClassifier) -> None:
    """Same faces, same stored transform, same metric definitions: metrics.json of training, to 1e-6."""
    trained = json.loads((trained_run.checkpoint.parent.parent / "metrics.json").read_text())
    data = {split: trained_run.datamodule.splits[split] for split in ("val", "test")}
    metrics, probs = evaluate_splits([classifier], data, "none", batch_size=100)
    keys = [f"{s}/{m}" for s in ("val", "test") for m in ("acc", "f1_macro", *(f"acc_{c}" for c in EMOTIONS))]
    for key in keys:
        assert metrics[key] == pytest.approx(trained[key], abs=1e-6), key
    assert probs["test"].shape == (len(data["test"][1]), len(EMOTIONS))


def test_split_metrics_definitions() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0, 2]]  # one angry->disgust, one fear->angry
    metrics = split_metrics(probs, labels, ("a", "b", "c"), "x")
    assert metrics["x/acc"] == pytest.approx(4 / 6)
    assert [metrics[f"x/acc_{c}"] for c in "abc"] == pytest.approx([0.5, 1.0, 0.5])
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]
    assert metrics["x/f1_macro"] == pytest.approx(np.mean(f1))


# --- The evaluate command ---------------------------------------------------------------------------------------

def test_evaluate_cli_reports_with_and_without_tta(trained_checkpoint: Path, classifier: TorchEmotionClassifier,
                                                   tiny_csv, tmp_path: Path) -> None:
    csv_path, images, labels = tiny_csv
    result = _run_cli([f"ckpt_paths={trained_checkpoint}", "tta=flip", f"data.root={csv_path}", "device=cpu",
                       f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "eval" / "runs").iterdir()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[^_/]+-\d+_flip_1models", run_dir.name)  # time_host-pid
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rates = [f"{p}{s}/{m}" for p in ("", "no_tta/") for s in ("val", "test")
             for m in ("acc", "f1_macro", *(f"acc_{c}" for c in EMOTIONS))]
    assert all(0.0 <= metrics[key] <= 1.0 for key in rates)
    assert metrics["tta"] == "flip" and metrics["num_models"] == 1 and metrics["data"] == str(csv_path)
    assert metrics["ckpt_paths"] == [str(trained_checkpoint.resolve())]
    assert metrics["num_faces"] == {"val": 21, "test": 28} and metrics["val_split"].startswith("official")
    assert metrics["public_private_gap"] == pytest.approx(metrics["val/acc"] - metrics["test/acc"])
    for split in ("val", "test"):  # the no-TTA numbers are the model's, computed directly
        direct = classifier.predict_proba(np.stack([prepare_face(f, classifier.eval_transform)
                                                    for f in images[split]])).argmax(1)
        assert metrics[f"no_tta/{split}/acc"] == pytest.approx(float((direct == labels[split]).mean()), abs=1e-6)
        probs = np.load(run_dir / f"probs_{split}.npy")
        np.testing.assert_allclose(probs, predict_proba_tta(classifier, images[split], "flip"), atol=1e-6)
        np.testing.assert_array_equal(np.load(run_dir / f"labels_{split}.npy"), labels[split])
    matrix = np.array(json.loads((run_dir / "confusion_matrix.json").read_text()))
    assert matrix.shape == (7, 7) and matrix.sum() == 28 and np.trace(matrix) == round(metrics["test/acc"] * 28)
    assert (run_dir / "confusion_matrix.png").stat().st_size > 0
    assert "PrivateTest is only reported" in result.stdout and "acc (no TTA)" in result.stdout


def test_evaluate_cli_ensemble_is_the_mean_of_its_members(trained_checkpoint: Path, second_checkpoint: Path,
                                                          tiny_csv, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    csv_path = tiny_csv[0]
    singles = []
    for i, ckpt in enumerate((trained_checkpoint, second_checkpoint)):  # in-process: the pure `evaluate(cfg)`
        out = tmp_path / f"single{i}"
        evaluate(compose_eval_cfg(out, [f"ckpt_paths={ckpt}", f"data.root={csv_path}", "device=cpu"]))
        singles.append(np.load(out / "probs_test.npy"))
    result = _run_cli([f"ckpt_paths=[{trained_checkpoint},{second_checkpoint}]", f"data.root={csv_path}",
                       "device=cpu", f"hydra.run.dir={tmp_path / 'ensemble'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ensemble = np.load(tmp_path / "ensemble" / "probs_test.npy")
    np.testing.assert_allclose(ensemble, (singles[0].astype(np.float64) + singles[1]) / 2, atol=1e-6)
    metrics = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    assert metrics["num_models"] == 2 and len(metrics["per_model"]) == 2 and "no_tta/test/acc" not in metrics
    member = json.loads((tmp_path / "single1" / "metrics.json").read_text())
    assert metrics["per_model"][1]["test/acc"] == pytest.approx(member["test/acc"], abs=1e-6)
    # the console table shows each member and then the ensemble, per split
    table = [line for line in result.stdout.splitlines() if "(val," in line or "(test," in line]
    assert len(table) == 6 and ["ensemble" in line for line in table] == [False, False, True] * 2
    assert "perturbed.ckpt" in table[4] and f"{member['test/acc']:.4f}" in table[4]
    assert f"{metrics['test/acc']:.4f}" in table[5]


def test_evaluate_refuses_checkpoints_with_different_classes(trained_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)
    checkpoint["fer_lightning"]["class_names"] = list(EMOTIONS[::-1])
    reordered = tmp_path / "reordered.ckpt"
    torch.save(checkpoint, reordered)
    cfg = compose_eval_cfg(tmp_path / "out", [f"ckpt_paths=[{trained_checkpoint},{reordered}]",
                                              f"data.root={tmp_path / 'no_data_needed'}", "device=cpu"])
    with pytest.raises(ValueError, match=r"different classes: .*reordered\.ckpt has \['neutral'"):
        evaluate(cfg)


def test_checkpoint_paths_takes_one_path_or_a_list(tmp_path: Path) -> None:
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    a.touch()
    b.touch()
    assert checkpoint_paths(str(a)) == [a] and checkpoint_paths([str(a), str(b)]) == [a, b]
    with pytest.raises(FileNotFoundError, match="c.ckpt, .*d.ckpt"):
        checkpoint_paths([str(a), str(tmp_path / "c.ckpt"), str(tmp_path / "d.ckpt")])
    with pytest.raises(ValueError, match="empty"):
        checkpoint_paths([])


def test_cli_missing_checkpoint_fails_before_loading_data(trained_checkpoint: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "best.ckpt"
    result = _run_cli([f"ckpt_paths=[{trained_checkpoint},{missing}]", f"data.root={tmp_path / 'no_data'}",
                       f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert result.returncode != 0
    assert f"checkpoint not found: {missing}" in result.stderr
    assert "FER2013 not found" not in result.stderr + result.stdout  # it never got as far as the data


def test_cli_unknown_tta_lists_the_modes(trained_checkpoint: Path, tmp_path: Path) -> None:
    result = _run_cli([f"ckpt_paths={trained_checkpoint}", "tta=tencrops", f"hydra.run.dir={tmp_path / 'r'}"],
                      tmp_path)
    assert result.returncode != 0
    assert "unknown TTA mode 'tencrops': choose one of none, flip, tencrop" in result.stderr
