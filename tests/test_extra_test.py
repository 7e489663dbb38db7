"""Extra test sets (`extra_test=ckplus|folder`): faces from elsewhere, read, mapped, scored and reported.

A cross-dataset number is only worth reading if it is computed on the faces the user meant (label map, dropped
classes counted, unusable files named), over the classes the set has (`present_class_metrics`), and is the same
number in training's metrics.json, in `python -m fer_lightning.evaluate` and in the sweep report. Fixtures are
generated here: a CK+-like set (`CK+48_dev/anger/`, `sadness/`, `happy/`, `contempt/`) of faces of any size and
colour, as a folder and as a zip with the top-level folder. The real CK+ dev zip is read only where `CKPLUS_ROOT`
points at it (.ci/run sets it).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import compose_train_cfg
from omegaconf import OmegaConf

from fer_lightning.cli.common import EXIT_USER_ERROR, exit_on_user_error
from fer_lightning.config import compose_config
from fer_lightning.data.folder_faces import (
    FolderFacesError,
    FolderTestSet,
    LabelledFaces,
    instantiate_extra_tests,
    read_labelled_folder,
    resolve_label_map,
)
from fer_lightning.data.readers import BadItemsError
from fer_lightning.data.synthetic import make_synthetic_faces
from fer_lightning.labels import EMOTION_TO_ID, EMOTIONS
from fer_lightning.metrics import confusion_matrix, present_class_metrics, split_metrics
from fer_lightning.plots import confusion_matrix_figure
from fer_lightning.preflight import check_eval_inputs, check_train_inputs
from fer_lightning.reporting import (
    Run,
    collect_runs,
    extra_test_names,
    is_neutral_override,
    markdown_table,
    result_overrides,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "fer_lightning" / "assets" / "fer2013_compact_cnn.ckpt"
TOP = "CK+48_dev"  # the real zip's top-level folder
CK_MAP = {"anger": "angry", "sadness": "sad", "contempt": None}  # conf/extra_test/ckplus.yaml's label_map
# source folder -> FER2013 class (None: dropped by CK_MAP); `happy` needs no entry, it is a FER2013 name
FOLDERS = {"anger": "angry", "sadness": "sad", "happy": "happy", "contempt": None}
CKPLUS_ENV = "CKPLUS_ROOT"
SMALL_SYNTHETIC = ["data=synthetic", "data.num_train=140", "data.num_val=70", "data.num_test=70"]


# --- Fixtures: a CK+-like face set -------------------------------------------------------------------------------

@dataclass
class FaceSet:
    folder: Path  # holds CK+48_dev/<class>/<image>, like the unzipped download
    zip: Path  # the same files, CK+48_dev/ inside
    expected: dict[str, tuple[np.ndarray, str]]  # rel path (from `folder`) -> (48x48 gray face, FER2013 class)
    dropped: dict[str, int]  # folder -> images the label map leaves out


def _encode(path: Path, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return data.tobytes()


def _as_48_gray(data: bytes) -> np.ndarray:
    """What a face file should become: decoded, colour to gray (OpenCV's BGR weights), area-resized to 48x48."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2GRAY)
    return cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA) if image.shape != (48, 48) else image


def _variant(face: np.ndarray, kind: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One face in one of the forms other sets ship: 48x48 gray PNG, colour non-square PNG, colour JPEG, BGRA."""
    if kind == 0:
        return face, ".png"
    colour = np.stack([face, np.roll(face, 3, axis=1), 255 - face], axis=-1)  # channels differ: real colour
    if kind == 1:
        return cv2.resize(colour, (80, 64), interpolation=cv2.INTER_LINEAR), ".png"  # 80 wide, 64 high
    if kind == 2:
        return cv2.resize(colour, (100, 100), interpolation=cv2.INTER_LINEAR), ".jpg"
    alpha = np.full(face.shape[:2] + (1,), 255, np.uint8)
    return np.concatenate([cv2.resize(colour, (30, 30)), cv2.resize(alpha, (30, 30))[..., None]], -1), ".png"


def _zip(folder: Path, target: Path) -> Path:
    """Every file and folder under `folder`, folder entries included, as `zip -r` writes them."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder).as_posix())
    return target


def make_face_set(root: Path, per_class: int = 4, seed: int = 0, synthetic: bool = False) -> FaceSet:
    """CK+48-like faces in every form `_variant` makes, plus what a download carries beside the class folders (a
    README, a cover picture) and a licence beside the top folder: none of those is a face of any class.

    `synthetic`: drawn faces of the folder's class (a model trained on synthetic faces scores above chance on
    them); otherwise random pixels.
    """
    rng = np.random.default_rng(seed)
    folder = root / "ck_folder"
    expected: dict[str, tuple[np.ndarray, str]] = {}
    dropped: dict[str, int] = {}
    drawn, drawn_labels = make_synthetic_faces(per_class * 7 * 2, seed=seed)
    for i, (name, target) in enumerate(FOLDERS.items()):
        pool = drawn[drawn_labels == EMOTION_TO_ID[target or "neutral"]]
        for k in range(per_class):
            face = pool[k] if synthetic else rng.integers(0, 256, (48, 48), dtype=np.uint8)
            image, suffix = _variant(face, (i + k) % 4, rng)
            rel = f"{TOP}/{name}/S{100 + i:03d}_{k + 1:03d}_{k:08d}{suffix}"
            data = _encode(folder / rel, image)
            if target is None:
                dropped[name] = dropped.get(name, 0) + 1
            else:
                expected[rel] = (_as_48_gray(data), target)
    (folder / TOP / "README.txt").write_text("CK+48, 7 expressions\n")
    _encode(folder / TOP / "cover.png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
    (folder / "LICENSE").write_text("for research only\n")
    return FaceSet(folder, _zip(folder, root / "ckplus48_dev.zip"), expected, dropped)


@pytest.fixture
def face_set(tmp_path: Path) -> FaceSet:
    return make_face_set(tmp_path)


def _in_order(faces: LabelledFaces) -> list[str]:
    return [rel.split("/", 1)[1] if rel.startswith(f"{TOP}/") else rel for rel in faces.files]


# --- Reading: label map, layout, pixels ------------------------------------------------------------------------

def test_label_map_renames_folders_and_counts_what_it_drops(face_set: FaceSet) -> None:
    faces = read_labelled_folder(face_set.zip, CK_MAP, name="ckplus")
    assert faces.name == "ckplus" and faces.source == str(face_set.zip)
    assert faces.dropped == {"contempt": 4} == face_set.dropped  # left out, and said so
    assert faces.classes == ("angry", "happy", "sad")  # EMOTIONS order; no face of disgust, fear, ... neutral
    assert faces.class_counts() == {"angry": 4, "happy": 4, "sad": 4}
    by_file = dict(zip(faces.files, faces.labels.tolist()))
    assert by_file == {rel: EMOTION_TO_ID[target] for rel, (_, target) in face_set.expected.items()}
    assert not any("/contempt/" in rel for rel in faces.files)
    assert faces.describe() == {"source": str(face_set.zip), "faces": 12, "classes": ["angry", "happy", "sad"],
                                "class_counts": {"angry": 4, "happy": 4, "sad": 4}, "dropped": {"contempt": 4},
                                "skipped": 0}
    # folder names and map keys match whatever their case; every spelling of "drop" drops
    assert resolve_label_map({"Anger": "ANGRY", "contempt": "null", "x": "none", "y": "drop", "z": ""}) == {
        "anger": "angry", "contempt": None, "x": None, "y": None, "z": None}


def test_any_size_and_colour_becomes_a_48x48_gray_face(face_set: FaceSet) -> None:
    faces = read_labelled_folder(face_set.folder, CK_MAP)
    assert faces.images.shape == (12, 48, 48) and faces.images.dtype == np.uint8 and faces.labels.dtype == np.int64
    sizes = {cv2.imread(str(face_set.folder / rel), cv2.IMREAD_UNCHANGED).shape for rel in faces.files}
    assert {(48, 48), (64, 80, 3), (100, 100, 3), (30, 30, 4)} <= sizes  # each form is among those read
    for rel, image in zip(faces.files, faces.images):
        np.testing.assert_array_equal(image, face_set.expected[rel][0], err_msg=rel)


def test_zip_and_folder_give_identical_arrays(face_set: FaceSet) -> None:
    from_zip = read_labelled_folder(face_set.zip, CK_MAP)
    for root in (face_set.folder, face_set.folder / TOP):  # above the top folder, or the top folder itself
        from_folder = read_labelled_folder(root, CK_MAP)
        np.testing.assert_array_equal(from_folder.images, from_zip.images)
        np.testing.assert_array_equal(from_folder.labels, from_zip.labels)
        assert _in_order(from_folder) == _in_order(from_zip) and from_folder.dropped == from_zip.dropped


def test_files_beside_the_class_folders_are_not_faces(face_set: FaceSet, tmp_path: Path) -> None:
    """README.txt and cover.png beside the class folders (in the top folder of a zip, too) and a licence above
    them are no face of any class: they neither stop the read nor become faces of a class named CK+48_dev."""
    for root in (face_set.zip, face_set.folder, face_set.folder / TOP):
        faces = read_labelled_folder(root, CK_MAP)
        assert len(faces.labels) == 12 and not any(Path(rel).name in ("README.txt", "cover.png", "LICENSE")
                                                   for rel in faces.files), root
    # a non-image file inside a class folder is something else: named, as every unusable file is
    (face_set.folder / TOP / "happy" / "notes.txt").write_text("x")
    with pytest.raises(BadItemsError, match=r"happy/notes\.txt: not an image file"):
        read_labelled_folder(face_set.folder, CK_MAP)


def test_an_unmapped_folder_stops_the_read_naming_every_one(face_set: FaceSet) -> None:
    with pytest.raises(FolderFacesError) as caught:
        read_labelled_folder(face_set.zip)  # CK+'s own names, no label_map
    message = str(caught.value)
    assert "folder(s) anger/ (4 images), contempt/ (4 images), sadness/ (4 images) are not FER2013 classes" in message
    assert "label_map.anger=<class> or =null" in message and "happy/" not in message  # happy is a FER2013 class
    with pytest.raises(FolderFacesError, match=r"folder\(s\) contempt/ \(4 images\) are not"):
        read_labelled_folder(face_set.zip, {"anger": "angry", "sadness": "sad"})  # one forgotten: named alone


def test_a_label_map_onto_an_unknown_class_is_refused_naming_every_bad_entry(face_set: FaceSet) -> None:
    with pytest.raises(FolderFacesError) as caught:
        resolve_label_map({"anger": "angry", "joy": "happiness", "calm": "relaxed"})
    message = str(caught.value)
    assert "unknown class(es) (joy: happiness; calm: relaxed)" in message
    assert "one of angry, disgust, fear, happy, sad, surprise, neutral, or onto null" in message
    # at construction: a typo fails when the config is instantiated, before anything is read or trained
    with pytest.raises(FolderFacesError, match="joy: happiness"):
        FolderTestSet(name="ck", root=str(face_set.folder / "nothing_read_yet"), label_map={"joy": "happiness"})


def test_unusable_images_are_named_in_one_error_or_skipped_and_counted(face_set: FaceSet) -> None:
    happy = sorted((face_set.folder / TOP / "happy").iterdir())
    happy[0].write_bytes(b"")  # an interrupted copy
    happy[1].write_bytes(b"this is not a PNG, nor a JPEG")  # named like an image, but text
    (face_set.folder / TOP / "contempt" / "broken.png").write_bytes(b"")  # dropped by the map: never decoded
    with pytest.raises(BadItemsError) as caught:
        read_labelled_folder(face_set.folder, CK_MAP)
    message = str(caught.value)
    assert f"{face_set.folder}: 2 unusable item(s) (corrupt=1, empty=1):" in message
    for path in happy[:2]:
        assert f"{face_set.folder}:{path.relative_to(face_set.folder).as_posix()}: " in message
    assert "broken.png" not in message
    skipped = FolderTestSet(name="ck", root=str(face_set.folder), label_map=CK_MAP, bad_images="skip").load()
    assert sorted(skipped.skipped) == sorted(p.relative_to(face_set.folder).as_posix() for p in happy[:2])
    assert skipped.class_counts() == {"angry": 4, "happy": 2, "sad": 4} and skipped.describe()["skipped"] == 2
    assert not set(skipped.files) & set(skipped.skipped) and skipped.dropped == {"contempt": 5}


def test_missing_or_empty_sources_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="labelled face folder not found: .*nowhere"):
        read_labelled_folder(tmp_path / "nowhere")
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(FolderFacesError, match="neither a folder nor a .zip"):
        read_labelled_folder(tmp_path / "plain.txt")
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    with pytest.raises(FolderFacesError, match="no usable labelled images"):
        read_labelled_folder(tmp_path / "empty")


# --- The extra_test config group -------------------------------------------------------------------------------

def test_the_ckplus_config_maps_ck_names_and_reads_its_root_from_the_environment(
        face_set: FaceSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CKPLUS_ENV, str(face_set.zip))
    for config_name, overrides in (("train", SMALL_SYNTHETIC), ("eval", ["data=synthetic", "ckpt_paths=x.ckpt"])):
        cfg = compose_config(config_name, [*overrides, "extra_test=ckplus"], tmp_path)
        (test_set,) = instantiate_extra_tests(cfg.get("extra_test"))
        assert (test_set.name, test_set.root) == ("ckplus", str(face_set.zip))
        faces = test_set.load()
        assert faces.dropped == {"contempt": 4} and faces.classes == ("angry", "happy", "sad")
        assert instantiate_extra_tests(compose_config(config_name, overrides, tmp_path).get("extra_test")) == []
    # the folder set takes its root and label map entries on the command line, as conf/extra_test/folder.yaml says
    cfg = compose_train_cfg(tmp_path, [*SMALL_SYNTHETIC, "extra_test=folder", f"extra_test.folder.root={face_set.zip}",
                                       "+extra_test.folder.label_map.anger=angry",
                                       "+extra_test.folder.label_map.sadness=sad",
                                       "+extra_test.folder.label_map.contempt=null"])
    (test_set,) = instantiate_extra_tests(cfg.extra_test)
    faces = test_set.load()
    assert faces.name == "folder" and faces.dropped == {"contempt": 4} and len(faces.labels) == 12


def test_extra_test_names_become_metric_keys_so_they_are_checked() -> None:
    with pytest.raises(FolderFacesError, match=r"name 'CK\+' must be lower case letters, digits and _"):
        FolderTestSet(name="CK+", root="x")
    node = OmegaConf.create({
        "b": {"_target_": "fer_lightning.data.folder_faces.FolderTestSet", "name": "b", "root": "b.zip"},
        "off": None,  # a set switched off on the command line (extra_test.off=null)
        "a": {"_target_": "fer_lightning.data.folder_faces.FolderTestSet", "name": "a", "root": "a.zip"},
    })
    assert [s.name for s in instantiate_extra_tests(node)] == ["b", "a"]  # config order, null entries off
    node.a.name = "other"
    with pytest.raises(FolderFacesError, match="extra_test.a has name='other'; the key and the name must agree"):
        instantiate_extra_tests(node)


# --- Preflight: a set that cannot be read stops the command before anything is created ------------------------

def test_preflight_reads_every_set_before_training_or_evaluating(face_set: FaceSet, tmp_path: Path) -> None:
    train_cfg = compose_train_cfg(tmp_path, [*SMALL_SYNTHETIC, "extra_test=folder",
                                             f"extra_test.folder.root={face_set.zip}"])
    with pytest.raises(FolderFacesError, match=r"anger/ \(4 images\), contempt/ \(4 images\), sadness/"):
        check_train_inputs(train_cfg)
    eval_cfg = compose_config("eval", [f"ckpt_paths={SHIPPED}", "data=synthetic", "extra_test=folder",
                                       f"extra_test.folder.root={tmp_path / 'no_such_faces'}"], tmp_path)
    with pytest.raises(FileNotFoundError, match="labelled face folder not found"):
        check_eval_inputs(eval_cfg)
    train_cfg.extra_test.folder.label_map = CK_MAP  # as +extra_test.folder.label_map.anger=angry ... would
    check_train_inputs(train_cfg)  # mapped: it reads, and nothing is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck_folder", "ckplus48_dev.zip"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["extra_test.folder.root=ROOT", "+extra_test.folder.label_map.anger=angri"],
     "error: label_map maps onto unknown class(es) (anger: angri)"),
    ([], "error: extra_test.folder.root is not set"),
], ids=["bad_label_map", "no_root"])
def test_config_mistakes_in_a_set_are_one_line_user_errors(overrides: list[str], message: str, face_set: FaceSet,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """What the command line does with a preflight error (exit status 2, `error: ...`), here without the cost of
    a subprocess; the run folder is made only after the preflight passed (test_the_train_command_... below)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = compose_train_cfg(tmp_path, [*SMALL_SYNTHETIC, "extra_test=folder",
                                       *(o.replace("ROOT", str(face_set.zip)) for o in overrides)])
    with pytest.raises(SystemExit) as caught:
        exit_on_user_error(lambda: check_train_inputs(cfg))
    assert caught.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_the_train_command_with_a_missing_set_stops_before_creating_anything(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "FER2013_ROOT")}
    env.update({"WANDB_MODE": "offline", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    missing = tmp_path / "no_such" / "ck.zip"
    result = subprocess.run([sys.executable, "-m", "fer_lightning", *SMALL_SYNTHETIC, "extra_test=folder",
                             f"extra_test.folder.root={missing}"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"error: labelled face folder not found: {missing} (a folder or .zip with one folder per class)"]
    assert list(work.iterdir()) == []  # no run folder, no W&B run: the preflight read the set first


# --- present_class_metrics and the confusion-matrix figure ------------------------------------------------------

def test_present_class_metrics_by_hand() -> None:
    """angry x3, happy x2, sad x1; one angry read as neutral (a class the set lacks), one happy read as angry."""
    labels = np.array([0, 0, 0, 3, 3, 4])
    predicted = [0, 0, 6, 3, 0, 4]
    probs = np.full((6, 7), 0.01)
    probs[np.arange(6), predicted] = 0.9
    metrics = present_class_metrics(probs, labels, EMOTIONS, "test/ck")
    assert set(metrics) == {"test/ck/acc", "test/ck/f1_macro", "test/ck/acc_angry", "test/ck/acc_happy",
                            "test/ck/acc_sad"}  # no per-class number for a class without faces
    assert metrics["test/ck/acc"] == pytest.approx(4 / 6)  # neutral counts as wrong: argmax over all 7 classes
    assert [metrics[f"test/ck/acc_{c}"] for c in ("angry", "happy", "sad")] == pytest.approx([2 / 3, 1 / 2, 1.0])
    # F1: angry tp 2 fp 1 fn 1 -> 2/3; happy tp 1 fp 0 fn 1 -> 2/3; sad 1. Neutral (fp 1) is not averaged in.
    assert metrics["test/ck/f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # split_metrics (torchmetrics) leaves out classes neither present nor predicted, but averages in neutral's 0
    over_all = split_metrics(probs, labels, EMOTIONS, "test/ck")["test/ck/f1_macro"]
    assert over_all == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_present_class_metrics_equal_split_metrics_when_every_class_is_there(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(7), rng.integers(0, 7, 60)])
    probs = rng.dirichlet(np.ones(7), size=len(labels))
    probs += np.eye(7)[labels] * (rng.random(len(labels)) < 0.5)[:, None]  # half of them right: not just chance
    present = present_class_metrics(probs, labels, EMOTIONS, "x")
    reference = split_metrics(probs, labels, EMOTIONS, "x")
    assert present.keys() == reference.keys()
    for key, value in reference.items():
        assert present[key] == pytest.approx(value, abs=1e-6), key


def test_confusion_figure_rows_are_the_sets_classes_columns_every_class() -> None:
    matrix = np.zeros((7, 7), np.int64)
    matrix[0, [0, 6]] = [2, 1]
    matrix[3, [3, 0]] = [1, 1]
    matrix[4, 4] = 1
    rows = [0, 3, 4]
    fig = confusion_matrix_figure(matrix[rows], EMOTIONS, "ck", row_names=[EMOTIONS[i] for i in rows])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["angry", "happy", "sad"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(EMOTIONS)  # faces read as neutral still show
    assert ax.images[0].get_array().shape == (3, 7)
    full = confusion_matrix_figure(matrix, EMOTIONS, "all").axes[0]
    assert [t.get_text() for t in full.get_yticklabels()] == list(EMOTIONS)
    assert fig.get_size_inches()[1] < confusion_matrix_figure(matrix, EMOTIONS, "all").get_size_inches()[1]


# --- Training with extra_test=folder, and evaluate on the same checkpoint ----------------------------------------

@dataclass
class ExtraRun:
    run_dir: Path
    metrics: dict
    faces: FaceSet
    overrides: list[str]  # the extra_test overrides the run was made with


@pytest.fixture(scope="module")
def extra_run(tmp_path_factory: pytest.TempPathFactory) -> ExtraRun:
    """One epoch of the compact CNN on 140 synthetic faces, scored after training on a CK+-like set of synthetic
    faces (colour, JPEG, other sizes; contempt dropped, no neutral, disgust, fear, surprise)."""
    from fer_lightning.train import train

    base = tmp_path_factory.mktemp("extra_run")
    faces = make_face_set(base, per_class=6, seed=1, synthetic=True)
    overrides = ["extra_test=folder", f"extra_test.folder.root={faces.zip}", "+extra_test.folder.label_map.anger=angry",
                 "+extra_test.folder.label_map.sadness=sad", "+extra_test.folder.label_map.contempt=null"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_LIGHTNING_CACHE", str(base / "cache"))
        mp.setenv("WANDB_MODE", "offline")
        cfg = compose_train_cfg(base / "run", [*SMALL_SYNTHETIC, "+experiment=compact_cnn", "trainer.max_epochs=1",
                                               "trainer.accelerator=cpu", "logger=csv", "callbacks.progress_bar=null",
                                               "seed=5", *overrides])
        metrics, _ = train(cfg)
    return ExtraRun(base / "run", metrics, faces, overrides)


def test_training_scores_the_selected_checkpoint_on_the_extra_set(extra_run: ExtraRun) -> None:
    metrics, run_dir = extra_run.metrics, extra_run.run_dir
    assert metrics == json.loads((run_dir / "metrics.json").read_text())
    present = ("angry", "happy", "sad")
    keys = {"test/folder/acc", "test/folder/f1_macro", *(f"test/folder/acc_{c}" for c in present)}
    assert keys == {key for key in metrics if key.startswith("test/folder/")}  # none for classes it lacks
    assert all(0.0 <= metrics[key] <= 1.0 for key in keys)
    assert metrics["extra_test"] == {"folder": {
        "source": str(extra_run.faces.zip), "faces": 18, "classes": list(present),
        "class_counts": dict.fromkeys(present, 6), "dropped": {"contempt": 6}, "skipped": 0}}
    matrix = np.array(json.loads((run_dir / "confusion_matrix_folder.json").read_text()))
    assert matrix.shape == (7, 7) and matrix.sum(axis=1).tolist() == [6, 0, 0, 6, 6, 0, 0]
    assert np.trace(matrix) == round(metrics["test/folder/acc"] * 18)
    assert (run_dir / "confusion_matrix_folder.png").stat().st_size > 0
    assert (run_dir / "confusion_matrix.png").is_file()  # the run's own test split is still plotted
    with (run_dir / "csv" / "metrics.csv").open() as handle:  # and the loggers got the numbers
        logged = [row for row in csv.DictReader(handle) if row.get("test/folder/acc")]
    assert len(logged) == 1 and float(logged[0]["test/folder/acc"]) == pytest.approx(metrics["test/folder/acc"])


def test_evaluate_gives_training_s_extra_set_numbers_for_the_same_checkpoint(
        extra_run: ExtraRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fer_lightning.evaluation import evaluate

    out = tmp_path / "eval"
    checkpoint = extra_run.metrics["best_ckpt_path"]
    cfg = compose_config("eval", [f"ckpt_paths={checkpoint}", "device=cpu", *SMALL_SYNTHETIC, "data.num_train=7",
                                  *extra_run.overrides], out)
    metrics = evaluate(cfg)
    trained = extra_run.metrics
    keys = [key for key in trained if key.startswith("test/folder/")]
    assert keys and {key for key in metrics if key.startswith("test/folder/")} == set(keys)
    for key in keys:
        assert metrics[key] == pytest.approx(trained[key], abs=1e-6), key
    assert metrics["extra_test"] == trained["extra_test"] and metrics["num_faces"]["test/folder"] == 18
    probs, labels = np.load(out / "probs_test_folder.npy"), np.load(out / "labels_test_folder.npy")
    assert probs.shape == (18, 7)
    np.testing.assert_array_equal(labels, read_labelled_folder(extra_run.faces.zip, CK_MAP).labels)
    assert present_class_metrics(probs, labels, EMOTIONS, "test/folder") == pytest.approx(
        {key: metrics[key] for key in keys})
    assert json.loads((out / "confusion_matrix_folder.json").read_text()) == confusion_matrix(probs, labels, 7).tolist()
    assert (out / "confusion_matrix_folder.png").stat().st_size > 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("folder (extra test set, reported only)"))
    assert row.split()[-3:] == ["18", f"{metrics['test/folder/acc']:.4f}", f"{metrics['test/folder/f1_macro']:.4f}"]


# --- The sweep report -------------------------------------------------------------------------------------------

def _write_run(root: Path, name: str, overrides: list[str], metrics: dict) -> None:
    """A run folder as `python -m fer_lightning` leaves it: metrics.json and .hydra/overrides.yaml."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    seed = next(int(o.split("=")[1]) for o in overrides if o.startswith("seed="))
    (run / "metrics.json").write_text(json.dumps({
        "experiment": "compact_cnn", "backbone": "compact_cnn", "seed": seed, "dataset": "fer2013",
        "synthetic": False, "source": "/data/fer2013.zip", "params": 1_000_000, "epochs": 3, "train_time_s": 10.0,
        "train/images_per_s": 1000.0, "val/f1_macro": 0.6, "test/f1_macro": 0.6, **metrics}))


def test_the_report_gets_a_column_per_extra_set_and_extra_test_never_splits_a_group(tmp_path: Path) -> None:
    base = ["+experiment=compact_cnn", "data.root=/data/fer2013.zip"]
    ck = {"test/ckplus/acc": 0.5, "test/ckplus/f1_macro": 0.45, "test/ckplus/acc_angry": 0.4,
          "extra_test": {"ckplus": {"faces": 432}}}
    _write_run(tmp_path, "a", [*base, "seed=1", "extra_test=ckplus", "extra_test.ckplus.root=/data/ck.zip"],
               {"val/acc": 0.6, "test/acc": 0.61, **ck})
    _write_run(tmp_path, "b", [*base, "seed=2"], {"val/acc": 0.62, "test/acc": 0.63})  # not scored on CK+
    _write_run(tmp_path, "c", [*base, "seed=1", "trainer.max_epochs=1"], {"val/acc": 0.3, "test/acc": 0.3})
    runs, failed = collect_runs(tmp_path)
    assert failed == [] and extra_test_names(runs) == ["ckplus"]
    rows = {row["n"]: row for row in summarize(runs)}
    assert sorted(rows) == [1, 2]  # a and b together (only extra_test differs), c alone
    grouped = rows[2]
    assert sorted(grouped["seeds"]) == [1, 2] and grouped["val/acc_mean"] == pytest.approx(0.61)
    assert grouped["test/ckplus/acc_mean"] == pytest.approx(0.5)  # over the runs scored on it
    assert grouped["test/ckplus/f1_macro_mean"] == pytest.approx(0.45)
    assert np.isnan(rows[1]["test/ckplus/acc_mean"])
    lines = markdown_table([grouped, rows[1]]).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    column = header.index("ckplus acc % (extra test)")
    assert header[column - 1] == "PrivateTest macro-F1 %" and header[column + 1] == "params (M)"
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[column] for row in cells] == ["50.00 ± 0.00", "n/a"]
    assert "extra test" not in markdown_table([summarize([runs[1]])[0]])  # no set, no column
    for override in ("extra_test=ckplus", "extra_test.ckplus.root=/x", "+extra_test.folder.label_map.joy=happy",
                     "extra_test=[ckplus,folder]"):
        run = Run(dir=Path("x"), metrics={}, curves={}, overrides=[override])
        assert result_overrides(run) == [], override
    assert is_neutral_override("extra_test.folder.root") and not is_neutral_override("extra_tests")


# --- The real CK+48 dev set -------------------------------------------------------------------------------------

def test_the_real_ckplus_dev_zip_reads_as_six_fer2013_classes(tmp_path: Path) -> None:
    root = os.environ.get(CKPLUS_ENV)
    if not root or not Path(root).exists():
        pytest.skip(f"{CKPLUS_ENV} is not set (the CK+48 dev zip is not available)")
    cfg = compose_train_cfg(tmp_path, [*SMALL_SYNTHETIC, "extra_test=ckplus"])  # the shipped label map
    (test_set,) = instantiate_extra_tests(cfg.extra_test)
    assert test_set.root == root
    faces = test_set.load()
    assert faces.class_counts() == {"angry": 63, "disgust": 87, "fear": 30, "happy": 96, "sad": 39, "surprise": 117}
    assert len(faces.labels) == 432 and faces.dropped == {"contempt": 27} and faces.skipped == ()
    assert faces.images.shape == (432, 48, 48) and faces.images.dtype == np.uint8
    assert faces.classes == ("angry", "disgust", "fear", "happy", "sad", "surprise")  # no neutral in CK+


def test_a_set_is_read_afresh_each_time(face_set: FaceSet) -> None:
    """Nothing is cached between reads: a set edited in place is read afresh (FolderTestSet.load's promise)."""
    test_set = FolderTestSet(name="ck", root=str(face_set.folder), label_map=CK_MAP)
    first = test_set.load()
    shutil.rmtree(face_set.folder / TOP / "sadness")
    second = test_set.load()
    assert first.class_counts()["sad"] == 4 and "sad" not in second.class_counts()
