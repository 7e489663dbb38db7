"""Readers, splits, class order and the decode cache, on tiny generated fixtures."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TinyFER, make_tiny_fer

from fer_lightning.data.cache import load_or_build
from fer_lightning.data.datamodule import stratified_val_split
from fer_lightning.data.download import FER2013NotFoundError, download_fer2013, resolve_source
from fer_lightning.data.readers import (
    FER2013FormatError,
    FERArrays,
    read_csv,
    read_image_folder,
    read_source,
    read_zip,
)
from fer_lightning.labels import EMOTIONS, SPLIT_NAMES


def _sorted(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels in an order independent of how the source listed them."""
    order = sorted(range(len(labels)), key=lambda i: (labels[i], images[i].tobytes()))
    return images[order], labels[order]


@pytest.mark.parametrize("form", ["folder", "zip", "csv"])
def test_every_form_gives_the_generated_arrays(tiny_fer: TinyFER, form: str) -> None:
    arrays = read_source(getattr(tiny_fer, form))
    assert arrays.images.dtype == np.uint8 and arrays.images.shape[1:] == (48, 48)
    for code, split in enumerate(SPLIT_NAMES):
        mask = arrays.splits == code
        images, labels = _sorted(arrays.images[mask], arrays.labels[mask])
        want_images, want_labels = _sorted(tiny_fer.images[split], tiny_fer.labels[split])
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(images, want_images)


def test_folder_and_zip_are_identical_including_order(tiny_fer: TinyFER) -> None:
    folder, archive = read_image_folder(tiny_fer.folder), read_zip(tiny_fer.zip)
    for field in ("images", "labels", "splits", "names"):
        np.testing.assert_array_equal(getattr(folder, field), getattr(archive, field))


def test_class_order_is_the_csv_ids_not_alphabetical(tiny_fer: TinyFER) -> None:
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    arrays = read_image_folder(tiny_fer.folder)
    for name, label in zip(arrays.names, arrays.labels):
        assert name.split("/")[1] == EMOTIONS[label]  # e.g. train/neutral/... -> 6, although 'neutral' < 'sad'


def test_split_comes_from_file_prefix(tiny_fer: TinyFER) -> None:
    arrays = read_zip(tiny_fer.zip)
    counts = arrays.split_counts()
    assert counts == {"train": [4] * 7, "val": [2] * 7, "test": [2] * 7}
    for name, split in zip(arrays.names, arrays.splits):
        expected = 0 if name.startswith("train/") else 1 if "/PublicTest_" in name else 2
        assert split == expected, name


def test_zip_with_a_top_level_folder(tiny_fer: TinyFER, tmp_path: Path) -> None:
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(tiny_fer.zip) as src, zipfile.ZipFile(nested, "w") as dst:
        for info in src.infolist():
            dst.writestr(f"fer2013/{info.filename}", src.read(info.filename))
        dst.writestr("__MACOSX/fer2013/._junk", b"\x00")
    np.testing.assert_array_equal(read_zip(nested).images, read_zip(tiny_fer.zip).images)


def test_icml_variant_with_spaced_header(tiny_fer: TinyFER, tmp_path: Path) -> None:
    rows = tiny_fer.csv.read_text().splitlines()
    icml = tmp_path / "icml_face_data.csv"
    body = []
    for line in rows[1:]:
        emotion, pixels, usage = line.split(",")
        body.append(f"{emotion},{usage},{pixels}")
    icml.write_text("\n".join(["emotion, Usage, pixels", *body]) + "\n")
    a, b = read_csv(tiny_fer.csv), read_csv(icml)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.splits, b.splits)


def test_fallback_split_without_prefixes(tmp_path: Path) -> None:
    tiny = make_tiny_fer(tmp_path, per_class={"train": 10, "val": 2, "test": 2}, prefixes=False)
    arrays = read_image_folder(tiny.folder)
    assert not arrays.has_official_val
    assert arrays.split_counts()["val"] == [0] * 7
    assert arrays.split_counts()["test"] == [4] * 7  # all of test/ is the test split
    train_labels = arrays.labels[arrays.splits == 0]
    mask = stratified_val_split(train_labels, 0.2, seed=3)
    assert np.bincount(train_labels[mask], minlength=7).tolist() == [2] * 7  # stratified: 20% of each class
    np.testing.assert_array_equal(mask, stratified_val_split(train_labels, 0.2, seed=3))
    assert not np.array_equal(mask, stratified_val_split(train_labels, 0.2, seed=4))


def test_mixed_prefixes_are_rejected_naming_a_file(tiny_fer: TinyFER) -> None:
    victim = next((tiny_fer.folder / "test" / "happy").glob("PublicTest_*.png"))
    victim.rename(victim.with_name("oops.png"))
    with pytest.raises(FER2013FormatError, match="oops.png"):
        read_image_folder(tiny_fer.folder)


def test_unknown_emotion_folder_is_named(tiny_fer: TinyFER) -> None:
    (tiny_fer.folder / "train" / "happy").rename(tiny_fer.folder / "train" / "joy")
    with pytest.raises(FER2013FormatError, match="joy"):
        read_image_folder(tiny_fer.folder)


def test_corrupt_image_is_named(tiny_fer: TinyFER) -> None:
    victim = next((tiny_fer.folder / "train" / "sad").glob("*.png"))
    victim.write_bytes(victim.read_bytes()[:20])
    with pytest.raises(FER2013FormatError, match=victim.name):
        read_image_folder(tiny_fer.folder)


def test_csv_errors_name_the_row(tiny_fer: TinyFER, tmp_path: Path) -> None:
    lines = tiny_fer.csv.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    emotion, pixels, usage = lines[3].split(",")
    bad.write_text("\n".join([*lines[:3], f"9,{pixels},{usage}", *lines[4:]]))
    with pytest.raises(FER2013FormatError, match="row 3.*outside 0-6"):
        read_csv(bad)
    bad.write_text("\n".join([*lines[:3], f"{emotion},1 2 3,{usage}", *lines[4:]]))
    with pytest.raises(FER2013FormatError, match="row 3.*3 values"):
        read_csv(bad)
    bad.write_text("emotion,pixels\n0,1 2 3\n")
    with pytest.raises(FER2013FormatError, match="Usage"):
        read_csv(bad)


def test_cache_is_reused_then_invalidated_when_the_source_changes(tiny_fer: TinyFER, tmp_path: Path) -> None:
    cache_dir, builds = tmp_path / "cache_here", []

    def build() -> FERArrays:
        builds.append(1)
        return read_zip(tiny_fer.zip)

    first = load_or_build(tiny_fer.zip, cache_dir, build)
    second = load_or_build(tiny_fer.zip, cache_dir, build)
    assert len(builds) == 1
    for field in ("images", "labels", "splits", "names"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert len(list(cache_dir.glob("*.npz"))) == 1

    stat = tiny_fer.zip.stat()  # a re-downloaded archive: new content, new mtime
    with zipfile.ZipFile(tiny_fer.zip, "a") as archive:
        archive.writestr("README.txt", "changed")
    os.utime(tiny_fer.zip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_or_build(tiny_fer.zip, cache_dir, build)
    assert len(builds) == 2
    assert len(list(cache_dir.glob("*.npz"))) == 1  # the stale cache is gone

    cache_file = next(cache_dir.glob("*.npz"))
    cache_file.write_bytes(b"garbage")  # a damaged cache is rebuilt, never trusted
    third = load_or_build(tiny_fer.zip, cache_dir, build)
    assert len(builds) == 3
    np.testing.assert_array_equal(third.images, first.images)
    assert not list(cache_dir.glob("*.tmp"))


def test_missing_root_says_where_it_looked_and_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(FER2013NotFoundError) as err:
        resolve_source(tmp_path / "nowhere")
    message = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in message
    assert "kaggle.com/datasets/msambare/fer2013" in message and "kagglehub" in message


def test_root_folder_holding_a_known_file(tiny_fer: TinyFER) -> None:
    assert resolve_source(tiny_fer.csv.parent) in {tiny_fer.csv, tiny_fer.zip}
    assert resolve_source(tiny_fer.folder) == tiny_fer.folder


def test_download_fails_with_a_clear_offline_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import kagglehub

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(RuntimeError, match="offline") as err:
        download_fer2013()
    assert "msambare/fer2013" in str(err.value)
