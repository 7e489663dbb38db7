"""Bad input (issue 6): every broken download either stops with a message naming the file, row or key, or, where
`data.bad_images|wrong_size|color` allow it, is skipped/converted and recorded; never silently. A source with
several unusable items stops once, naming all of them, so one fix-and-rerun is enough.

Explicit tests for each kind of bad input, then hypothesis properties over random tiny datasets and random
corruptions, in every form (folder, zip, CSV) and under every reader policy.
"""

from __future__ import annotations

import csv
import itertools
import logging
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
from conftest import TinyFER, compose_train_cfg, make_tiny_fer
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from fer_lightning.data.datamodule import FER2013DataModule
from fer_lightning.data.readers import (
    POLICY_CHOICES,
    BadItemError,
    FER2013FormatError,
    FERArrays,
    ReadPolicy,
    read_csv,
    read_image_folder,
    read_source,
    read_zip,
)
from fer_lightning.errors import FERLightningError
from fer_lightning.labels import EMOTIONS, TEST, TRAIN, VAL

SKIP = ReadPolicy(bad_images="skip")
CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data" / "fer2013.yaml"


def _zip_folder(folder: Path, target: Path, keep_dirs: bool = False) -> Path:
    """The folder as the Kaggle archive would hold it (members relative to the folder)."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() or keep_dirs:
                archive.write(path, path.relative_to(folder).as_posix())
    return target


def _png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return buffer.tobytes()


def _first(folder: Path, pattern: str = "train/sad/*.png") -> Path:
    return sorted(folder.glob(pattern))[0]


def _without(arrays: FERArrays, rel: str) -> dict[str, np.ndarray]:
    keep = arrays.names != rel
    return {key: getattr(arrays, key)[keep] for key in ("images", "labels", "splits", "names")}


def _assert_same(arrays: FERArrays, expected: dict[str, np.ndarray]) -> None:
    for key, value in expected.items():
        np.testing.assert_array_equal(getattr(arrays, key), value, err_msg=key)


def _flip_byte_in_member(archive_path: Path, member: str, at: float = 0.5) -> None:
    """One byte of a member's data changed in place, headers untouched: a CRC error for a stored member."""
    with zipfile.ZipFile(archive_path) as archive:
        info = archive.getinfo(member)
    raw = bytearray(archive_path.read_bytes())
    name_len, extra_len = (int.from_bytes(raw[info.header_offset + i:info.header_offset + i + 2], "little")
                           for i in (26, 28))
    data_start = info.header_offset + 30 + name_len + extra_len
    raw[data_start + int(info.compress_size * at)] ^= 0xFF
    archive_path.write_bytes(bytes(raw))


# --- Images in folders and zips -----------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "zip"])
def test_zero_byte_image_is_named_or_skipped(tiny_fer: TinyFER, tmp_path: Path, form: str) -> None:
    clean = read_image_folder(tiny_fer.folder)
    victim = _first(tiny_fer.folder)
    rel = victim.relative_to(tiny_fer.folder).as_posix()
    victim.write_bytes(b"")
    source = tiny_fer.folder if form == "folder" else _zip_folder(tiny_fer.folder, tmp_path / "archive.zip")
    with pytest.raises(FER2013FormatError, match=rf"{rel}: empty file \(0 bytes\)"):
        read_source(source)
    arrays = read_source(source, SKIP)
    _assert_same(arrays, _without(clean, rel))
    record = f"fer_folder/{rel}" if form == "folder" else f"archive.zip:{rel}"
    assert [(item.kind, item.name) for item in arrays.problems.skipped] == [("empty", record)]


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_non_image_file_in_an_emotion_folder(tiny_fer: TinyFER, tmp_path: Path, form: str) -> None:
    (tiny_fer.folder / "train" / "happy" / "notes.txt").write_text("downloaded from somewhere")
    source = tiny_fer.folder if form == "folder" else _zip_folder(tiny_fer.folder, tmp_path / "archive.zip")
    with pytest.raises(FER2013FormatError, match="train/happy/notes.txt: not an image file"):
        read_source(source)
    arrays = read_source(source, SKIP)
    assert len(arrays.images) == 7 * 8  # every image is still there
    assert [item.kind for item in arrays.problems.skipped] == ["not_image"]
    assert arrays.problems.skipped[0].name.endswith("train/happy/notes.txt")


def test_text_file_named_like_an_image_is_corrupt(tiny_fer: TinyFER) -> None:
    victim = _first(tiny_fer.folder)
    victim.write_text("<html>404 Not Found</html>")
    with pytest.raises(BadItemError, match=f"{victim.name}: not a readable image") as err:
        read_image_folder(tiny_fer.folder)
    assert err.value.kind == "corrupt"


def test_zip_member_with_a_crc_error_is_named_or_skipped(tiny_fer: TinyFER) -> None:
    member = "train/angry/" + _first(tiny_fer.folder, "train/angry/*.png").name
    _flip_byte_in_member(tiny_fer.zip, member)
    with pytest.raises(FER2013FormatError, match=f"fer2013.zip:{member}: cannot be read .*CRC"):
        read_zip(tiny_fer.zip)
    arrays = read_zip(tiny_fer.zip, SKIP)
    assert [(i.kind, i.name) for i in arrays.problems.skipped] == [("unreadable", f"fer2013.zip:{member}")]
    assert member not in arrays.names and len(arrays.images) == 7 * 8 - 1


def test_deflated_member_with_corrupt_data_is_named(tiny_fer: TinyFER, tmp_path: Path) -> None:
    """Real downloads are deflated: damaged compressed data raises zlib.error, not only BadZipFile."""
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(tiny_fer.zip) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with zipfile.ZipFile(deflated) as archive:
        member = sorted(n for n in archive.namelist() if n.startswith("test/fear/") and n.endswith(".png"))[0]
    _flip_byte_in_member(deflated, member, at=0)  # the first block header: an invalid deflate block type
    with pytest.raises(FER2013FormatError, match=f"deflated.zip:{member}: cannot be read .*error: "):
        read_zip(deflated)


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "zero_bytes"])
def test_broken_archive_is_named_and_says_download_again(tiny_fer: TinyFER, damage: str) -> None:
    data = tiny_fer.zip.read_bytes()
    damaged = {"truncated": data[: len(data) - 200], "random_bytes": np.random.default_rng(0).bytes(5000),
               "zero_bytes": b""}[damage]
    tiny_fer.zip.write_bytes(damaged)
    with pytest.raises(FER2013FormatError, match=r"fer2013.zip: not a valid zip archive .*download it again"):
        read_source(tiny_fer.zip, SKIP)  # a broken archive is not an item to skip


def test_colour_image_is_converted_and_counted_by_default(tiny_fer: TinyFER) -> None:
    victim = _first(tiny_fer.folder)
    rel = victim.relative_to(tiny_fer.folder).as_posix()
    gray = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
    bgr = np.dstack([gray, 255 - gray, gray // 2])
    assert cv2.imwrite(str(victim), bgr)
    arrays = read_image_folder(tiny_fer.folder)
    np.testing.assert_array_equal(arrays.images[list(arrays.names).index(rel)], cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert arrays.problems.converted_color == (f"fer_folder/{rel}",) and not arrays.problems.skipped

    with pytest.raises(BadItemError, match=f"{rel}: colour image .*data.color=convert") as err:
        read_image_folder(tiny_fer.folder, ReadPolicy(color="error"))
    assert err.value.kind == "color"
    skipped = read_image_folder(tiny_fer.folder, ReadPolicy(color="error", bad_images="skip"))
    assert [(i.kind, i.name) for i in skipped.problems.skipped] == [("color", f"fer_folder/{rel}")]
    assert rel not in skipped.names


@pytest.mark.parametrize("container", ["bgr_png", "bgr_jpeg", "bgra_opaque_png"])
def test_gray_stored_in_a_colour_container_is_not_a_conversion(tiny_fer: TinyFER, container: str) -> None:
    """Equal channels (and opaque alpha) carry no colour: taken as gray, not counted, accepted by color=error."""
    victim = _first(tiny_fer.folder)
    gray = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
    if container == "bgr_jpeg":
        victim = victim.rename(victim.with_suffix(".jpg"))
        assert cv2.imwrite(str(victim), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        gray = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)[..., 0]  # JPEG is lossy; its channels stay equal
        assert cv2.imdecode(np.fromfile(victim, np.uint8), cv2.IMREAD_UNCHANGED).shape == (48, 48, 3)
    else:
        code = cv2.COLOR_GRAY2BGR if container == "bgr_png" else cv2.COLOR_GRAY2BGRA
        assert cv2.imwrite(str(victim), cv2.cvtColor(gray, code))
    arrays = read_image_folder(tiny_fer.folder, ReadPolicy(color="error"))
    rel = victim.relative_to(tiny_fer.folder).as_posix()
    np.testing.assert_array_equal(arrays.images[list(arrays.names).index(rel)], gray)
    assert arrays.problems.clean


def test_translucent_image_counts_as_a_conversion(tiny_fer: TinyFER) -> None:
    victim = _first(tiny_fer.folder)
    bgra = cv2.cvtColor(cv2.imread(str(victim), cv2.IMREAD_UNCHANGED), cv2.COLOR_GRAY2BGRA)
    bgra[..., 3] = 128
    assert cv2.imwrite(str(victim), bgra)
    assert len(read_image_folder(tiny_fer.folder).problems.converted_color) == 1
    with pytest.raises(FER2013FormatError, match="transparent image"):
        read_image_folder(tiny_fer.folder, ReadPolicy(color="error"))


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_wrong_size_is_refused_resized_or_skipped(tiny_fer: TinyFER, tmp_path: Path, form: str) -> None:
    victim = _first(tiny_fer.folder)
    rel = victim.relative_to(tiny_fer.folder).as_posix()
    big = np.random.default_rng(1).integers(0, 256, size=(64, 80), dtype=np.uint8)
    assert cv2.imwrite(str(victim), big)
    source = tiny_fer.folder if form == "folder" else _zip_folder(tiny_fer.folder, tmp_path / "archive.zip")
    with pytest.raises(BadItemError, match=f"{rel}: image is 80x64 pixels; FER2013 images are 48x48") as err:
        read_source(source)
    assert err.value.kind == "wrong_size"
    resized = read_source(source, ReadPolicy(wrong_size="resize"))
    expected = cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(resized.images[list(resized.names).index(rel)], expected)
    assert len(resized.problems.resized) == 1 and resized.problems.resized[0].endswith(rel)
    skipped = read_source(source, SKIP)
    assert [i.kind for i in skipped.problems.skipped] == ["wrong_size"] and rel not in skipped.names


def test_sixteen_bit_image_is_refused(tiny_fer: TinyFER) -> None:
    victim = _first(tiny_fer.folder)
    assert cv2.imwrite(str(victim), np.full((48, 48), 1000, dtype=np.uint16))
    with pytest.raises(BadItemError, match=f"{victim.name}: uint16 pixels"):
        read_image_folder(tiny_fer.folder)


# --- Layout: emotion folders and the test/ split ------------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "zip"])
def test_missing_emotion_folder_is_named(tiny_fer: TinyFER, tmp_path: Path, form: str) -> None:
    for path in (tiny_fer.folder / "train" / "disgust").iterdir():
        path.unlink()
    (tiny_fer.folder / "train" / "disgust").rmdir()
    source = tiny_fer.folder if form == "folder" else _zip_folder(tiny_fer.folder, tmp_path / "archive.zip")
    with pytest.raises(FER2013FormatError, match=r"missing emotion folder\(s\) train/disgust/;"):
        read_source(source, SKIP)


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_empty_emotion_folder_is_named(tiny_fer: TinyFER, tmp_path: Path, form: str) -> None:
    for path in (tiny_fer.folder / "test" / "surprise").iterdir():
        path.unlink()
    source = tiny_fer.folder
    if form == "zip":  # the archive keeps the empty folder as a directory entry
        source = _zip_folder(tiny_fer.folder, tmp_path / "archive.zip", keep_dirs=True)
    with pytest.raises(FER2013FormatError, match=r"emotion folder\(s\) test/surprise/ hold no image files"):
        read_source(source, SKIP)


def test_class_left_without_training_images_by_skipping_is_an_error(tiny_fer: TinyFER) -> None:
    for path in (tiny_fer.folder / "train" / "fear").iterdir():
        path.write_bytes(b"")
    with pytest.raises(FER2013FormatError, match="every image in train/fear/ was skipped"):
        read_image_folder(tiny_fer.folder, SKIP)


def test_unknown_empty_emotion_folder_is_named(tiny_fer: TinyFER) -> None:
    (tiny_fer.folder / "test" / "contempt").mkdir()
    with pytest.raises(FER2013FormatError, match="unknown emotion folder 'test/contempt/'"):
        read_image_folder(tiny_fer.folder)


def test_test_folder_without_prefixes_says_which_folder_and_what_follows(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    tiny = make_tiny_fer(tmp_path, prefixes=False)
    with caplog.at_level(logging.WARNING, logger="fer_lightning.data.readers"):
        arrays = read_image_folder(tiny.folder)
    assert not arrays.has_official_val
    message = caplog.text
    assert f"{tiny.folder}/test/" in message and "PublicTest_/PrivateTest_" in message
    assert "all of test/ becomes the test split" in message and "validation is carved out of train/" in message


def test_image_outside_the_layout_is_recorded_not_lost(tiny_fer: TinyFER) -> None:
    (tiny_fer.folder / "samples").mkdir()
    (tiny_fer.folder / "samples" / "face.png").write_bytes(_png(np.zeros((48, 48), np.uint8)))
    arrays = read_image_folder(tiny_fer.folder)
    assert len(arrays.images) == 7 * 8
    assert arrays.problems.outside_layout == ("fer_folder/samples/face.png",)
    assert arrays.problems.summary()["outside_layout"] == 1


# --- CSV ----------------------------------------------------------------------------------------------------

CSV_DAMAGE = {  # name -> (how the victim row's fields change, kind, what the message says)
    "malformed_pixels": (lambda f: [f[0], "12 a 3 " + " ".join(f[1].split()[3:]), f[2]], "bad_pixels",
                         "not a list of integers"),
    "wrong_pixel_count": (lambda f: [f[0], "1 2 3", f[2]], "bad_pixels", "has 3 values, expected 2304"),
    "pixel_out_of_range": (lambda f: [f[0], "256 " + " ".join(f[1].split()[1:]), f[2]], "bad_pixels",
                           "must lie in 0-255"),
    "label_out_of_range": (lambda f: ["7", f[1], f[2]], "bad_label", "emotion 7 is outside 0-6"),
    "negative_label": (lambda f: ["-1", f[1], f[2]], "bad_label", "emotion -1 is outside 0-6"),
    "label_not_an_integer": (lambda f: ["happy", f[1], f[2]], "bad_label", "emotion 'happy' is not an integer"),
    "extra_field": (lambda f: [*f, "oops"], "bad_fields", "4 fields, the header has 3"),
    "missing_field": (lambda f: f[:2], "bad_fields", "2 fields, the header has 3"),
    "unknown_usage": (lambda f: [f[0], f[1], "Validation"], "bad_usage", "Usage 'Validation' is not one of"),
}


def _rewrite_csv(path: Path, damage: dict[int, object]) -> None:
    """Apply `damage[row](fields)` to data rows (1-based); the header stays."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    for row, change in damage.items():
        rows[row] = change(rows[row])
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize("damage", sorted(CSV_DAMAGE))
def test_bad_csv_row_is_named_with_row_and_line_or_skipped(tiny_fer: TinyFER, damage: str) -> None:
    clean = read_csv(tiny_fer.csv)
    change, kind, says = CSV_DAMAGE[damage]
    _rewrite_csv(tiny_fer.csv, {5: change})
    with pytest.raises(BadItemError, match=rf"fer2013.csv: row 5 \(line 6\): .*{says}") as err:
        read_csv(tiny_fer.csv)
    assert err.value.kind == kind
    arrays = read_csv(tiny_fer.csv, SKIP)
    _assert_same(arrays, _without(clean, "fer2013.csv:row5"))
    assert [(i.kind, i.name) for i in arrays.problems.skipped] == [(kind, "fer2013.csv:row5")]


def test_skipped_csv_rows_are_all_counted_by_kind(tiny_fer: TinyFER, caplog: pytest.LogCaptureFixture) -> None:
    _rewrite_csv(tiny_fer.csv, {2: CSV_DAMAGE["label_out_of_range"][0], 9: CSV_DAMAGE["extra_field"][0],
                                30: CSV_DAMAGE["malformed_pixels"][0]})
    with caplog.at_level(logging.WARNING):
        arrays = read_source(tiny_fer.csv, SKIP)
    assert len(arrays.images) == 7 * 8 - 3
    assert arrays.problems.summary() == {
        "skipped": {"bad_fields": 1, "bad_label": 1, "bad_pixels": 1}, "skipped_total": 3, "converted_color": 0,
        "resized": 0, "outside_layout": 0,
        "examples": ["fer2013.csv:row2 (bad_label)", "fer2013.csv:row9 (bad_fields)", "fer2013.csv:row30 (bad_pixels)"],
    }
    assert "skipped 3 unusable item(s)" in caplog.text and "row 2 (line 3)" in caplog.text


def test_csv_without_usage_column_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    bad = tmp_path / "fer2013.csv"
    bad.write_text("emotion,pixels\n0," + " ".join(["0"] * 2304) + "\n")
    with pytest.raises(FER2013FormatError, match=r"missing column\(s\) \['Usage'\]"):
        read_csv(bad, SKIP)


def test_csv_whose_every_row_is_bad_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "fer2013.csv"
    bad.write_text("emotion,pixels,Usage\n9,1 2 3,Training\nx,1,PublicTest\n")
    with pytest.raises(FER2013FormatError, match=r"no usable rows \(2 skipped\)"):
        read_csv(bad, SKIP)


# --- Policy: config, validation, reporting ------------------------------------------------------------------

def _eval() -> A.Compose:
    return A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])


@pytest.mark.parametrize("key", sorted(POLICY_CHOICES))
def test_policy_values_are_checked_naming_the_key(tiny_fer: TinyFER, key: str) -> None:
    allowed = ", ".join(POLICY_CHOICES[key])
    with pytest.raises(FER2013FormatError, match=rf"data.{key}='ignore' is not allowed; choose one of {allowed}"):
        FER2013DataModule(root=str(tiny_fer.zip), train_transform=_eval(), eval_transform=_eval(), **{key: "ignore"})


def test_config_file_exposes_the_policy_with_the_reader_defaults() -> None:
    data = OmegaConf.load(CONF_DATA)
    assert {key: data[key] for key in POLICY_CHOICES} == {"bad_images": "error", "wrong_size": "error",
                                                          "color": "convert"}
    assert ReadPolicy() == ReadPolicy(**{key: data[key] for key in POLICY_CHOICES})


def test_command_line_overrides_reach_the_reader(tiny_fer: TinyFER, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_train_cfg(tmp_path / "run", ["data=fer2013", f"data.root={tiny_fer.folder}", "data.bad_images=skip",
                                               "data.wrong_size=resize", "data.color=error"])
    datamodule = instantiate(cfg.data)
    assert datamodule.read_policy == ReadPolicy(bad_images="skip", wrong_size="resize", color="error")


def test_describe_reports_problems_for_metrics_json(tiny_fer: TinyFER, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    def describe(**policy: str) -> dict:
        dm = FER2013DataModule(root=str(tiny_fer.folder), train_transform=_eval(), eval_transform=_eval(),
                               num_workers=0, cache_dir=str(tmp_path / "cache"), **policy)
        dm.prepare_data()
        dm.setup("fit")
        return dm.describe()["data_problems"]

    assert describe() == {"skipped": {}, "skipped_total": 0, "converted_color": 0, "resized": 0,
                          "outside_layout": 0, "examples": []}
    victim = _first(tiny_fer.folder)
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(FER2013FormatError, match=victim.name):
        describe()
    for _ in range(2):  # decoded, then from the cache: the record and the warning survive the cache
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            problems = describe(bad_images="skip")
        assert problems["skipped"] == {"corrupt": 1} and problems["skipped_total"] == 1
        assert problems["examples"] == [f"fer_folder/train/sad/{victim.name} (corrupt)"]
        assert "skipped 1 unusable item(s)" in caplog.text and victim.name in caplog.text


# --- Every unusable item in one error (one pass, one rerun) -------------------------------------------------

SKIP_HINT = "data.bad_images=skip"


def _add_bad_jpegs(folder: Path) -> tuple[str, str]:
    """A zero-byte JPEG and an HTML page saved as .jpg, in two class folders: the usual broken-download pair."""
    empty, html = "train/sad/Training_900001.jpg", "train/happy/Training_900002.jpg"
    (folder / empty).write_bytes(b"")
    (folder / html).write_text("<html>404 Not Found</html>")
    return empty, html


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_unusable_files_in_two_class_folders_fail_in_one_error_naming_both(tiny_fer: TinyFER, tmp_path: Path,
                                                                          form: str) -> None:
    empty, html = _add_bad_jpegs(tiny_fer.folder)
    source = tiny_fer.folder if form == "folder" else _zip_folder(tiny_fer.folder, tmp_path / "archive.zip")
    sep = "/" if form == "folder" else ":"
    with pytest.raises(FER2013FormatError) as err:
        read_source(source)
    message = str(err.value)
    assert f"{source}{sep}{empty}: empty file (0 bytes)" in message
    assert f"{source}{sep}{html}: not a readable image" in message
    assert f"{source}: 2 unusable item(s) (corrupt=1, empty=1)" in message
    assert message.rstrip().endswith("skipped items are counted in metrics.json under data_problems.")
    assert SKIP_HINT in message.splitlines()[-1]
    assert isinstance(err.value, FERLightningError) and isinstance(err.value, ValueError)
    assert [(where, reason.split(" (")[0]) for where, reason in err.value.problems] == [
        (f"{source}{sep}{html}", "not a readable image"), (f"{source}{sep}{empty}", "empty file")]
    assert err.value.name == (f"fer_folder/{html}" if form == "folder" else f"archive.zip:{html}")  # the first
    skipped = read_source(source, SKIP)  # what the hint promises: both left out and recorded, the rest kept
    assert sorted(item.kind for item in skipped.problems.skipped) == ["corrupt", "empty"]
    assert len(skipped.images) == 7 * 8


def test_more_than_twenty_unusable_files_name_twenty_and_count_the_rest(tiny_fer: TinyFER) -> None:
    bad = [f"train/{EMOTIONS[i % 7]}/Training_9{i:05d}.png" for i in range(25)]
    for rel in bad:
        (tiny_fer.folder / rel).write_bytes(b"")
    with pytest.raises(FER2013FormatError) as err:
        read_image_folder(tiny_fer.folder)
    message = str(err.value)
    listed = [line for line in message.splitlines() if ": empty file (0 bytes)" in line]
    assert len(listed) == 20 and "  ... and 5 more" in message.splitlines()
    assert f"{tiny_fer.folder}: 25 unusable item(s) (empty=25)" in message
    assert len(err.value.problems) == 25  # the attribute keeps them all
    assert all(error.__traceback__ is None for error in err.value.errors)  # no decode frames (pixels) kept alive
    named = {rel for rel in bad if f"{tiny_fer.folder}/{rel}:" in message}
    assert named == set(sorted(bad)[:20])  # the first 20 in file order, not an arbitrary 20
    assert SKIP_HINT in message.splitlines()[-1]


def test_two_bad_csv_rows_are_named_in_one_error(tiny_fer: TinyFER) -> None:
    _rewrite_csv(tiny_fer.csv, {3: CSV_DAMAGE["label_out_of_range"][0], 17: CSV_DAMAGE["wrong_pixel_count"][0]})
    with pytest.raises(FER2013FormatError) as err:
        read_csv(tiny_fer.csv)
    message = str(err.value)
    assert f"{tiny_fer.csv}: row 3 (line 4): emotion 7 is outside 0-6" in message
    assert f"{tiny_fer.csv}: row 17 (line 18): 'pixels' has 3 values, expected 2304" in message
    assert f"{tiny_fer.csv}: 2 unusable item(s) (bad_label=1, bad_pixels=1)" in message
    assert SKIP_HINT in message.splitlines()[-1]
    assert [where for where, _ in err.value.problems] == [f"{tiny_fer.csv}: row 3 (line 4)",
                                                          f"{tiny_fer.csv}: row 17 (line 18)"]


def test_wrong_size_and_colour_rejections_are_collected_with_the_rest(tiny_fer: TinyFER) -> None:
    """`wrong_size=error` and `color=error` make an item a bad image: listed with the others, not raised alone."""
    colour, big, broken = (sorted(tiny_fer.folder.glob(f"{split}/{emotion}/*.png"))[0]
                           for split, emotion in (("train", "angry"), ("train", "fear"), ("test", "neutral")))
    gray = cv2.imread(str(colour), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(colour), np.dstack([gray, 255 - gray, gray // 2]))
    assert cv2.imwrite(str(big), np.zeros((64, 80), np.uint8))
    broken.write_bytes(broken.read_bytes()[:30])
    with pytest.raises(FER2013FormatError) as err:
        read_image_folder(tiny_fer.folder, ReadPolicy(wrong_size="error", color="error"))
    message = str(err.value)
    assert f"{colour}: colour image (3 channels)" in message and "data.color=convert" in message
    assert f"{big}: image is 80x64 pixels" in message and "data.wrong_size=resize" in message
    assert f"{broken}: not a readable image" in message
    assert f"{tiny_fer.folder}: 3 unusable item(s) (color=1, corrupt=1, wrong_size=1)" in message
    assert SKIP_HINT in message.splitlines()[-1]


def test_a_failed_read_writes_no_decode_cache(tiny_fer: TinyFER, tmp_path: Path) -> None:
    _add_bad_jpegs(tiny_fer.folder)
    cache_dir = tmp_path / "cache"

    def datamodule(**policy: str) -> FER2013DataModule:
        return FER2013DataModule(root=str(tiny_fer.folder), train_transform=_eval(), eval_transform=_eval(),
                                 num_workers=0, cache_dir=str(cache_dir), **policy)

    for _ in range(2):  # and the second attempt reads the source again, it does not find a half-checked decode
        with pytest.raises(FER2013FormatError, match="2 unusable item"):
            datamodule().prepare_data()
        assert not list(cache_dir.glob("*.npz")) and not list(cache_dir.glob(".*.tmp"))
    datamodule(bad_images="skip").prepare_data()
    assert len(list(cache_dir.glob("*.npz"))) == 1  # the skip decode is cached, under its own policy


def test_the_error_for_many_items_survives_pickling(tiny_fer: TinyFER) -> None:
    """Errors cross processes (DDP ranks, joblib launcher jobs): the list and the first item must arrive."""
    import pickle

    _add_bad_jpegs(tiny_fer.folder)
    with pytest.raises(FER2013FormatError) as err:
        read_image_folder(tiny_fer.folder)
    copy = pickle.loads(pickle.dumps(err.value))
    assert type(copy) is type(err.value) and str(copy) == str(err.value)
    assert copy.problems == err.value.problems and (copy.kind, copy.name) == (err.value.kind, err.value.name)


def test_project_error_classes_share_the_project_base() -> None:
    from fer_lightning.data.cache import CacheInvalidError

    for cls in (FER2013FormatError, BadItemError, CacheInvalidError):
        assert issubclass(cls, FERLightningError) and issubclass(cls, ValueError), cls


# --- Properties: random datasets, random corruptions --------------------------------------------------------

@dataclass
class Written:
    """A random tiny FER2013 in all three forms, and what each item is expected to decode to."""

    folder: Path
    zip: Path
    csv: Path
    rels: list[str] = field(default_factory=list)  # folder items, sorted as the readers sort them
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    csv_rows: list[list[str]] = field(default_factory=list)  # data rows, in file order
    csv_images: list[np.ndarray] = field(default_factory=list)


PREFIX = {TRAIN: "Training_", VAL: "PublicTest_", TEST: "PrivateTest_"}
USAGE = {TRAIN: "Training", VAL: "PublicTest", TEST: "PrivateTest"}


def _write_random_fer(root: Path, counts: list[tuple[int, int, int]], seed: int) -> Written:
    """`counts[label] = (train, val, test)`; train >= 2 so one skipped image never empties a class."""
    rng = np.random.default_rng(seed)
    written = Written(folder=root / "fer_folder", zip=root / "fer2013.zip", csv=root / "fer2013.csv")
    uid = 0
    for label, (emotion, per_split) in enumerate(zip(EMOTIONS, counts)):
        for code, count in zip((TRAIN, VAL, TEST), per_split):
            for _ in range(count):
                uid += 1
                image = rng.integers(0, 256, size=(48, 48), dtype=np.uint8)
                rel = f"{'train' if code == TRAIN else 'test'}/{emotion}/{PREFIX[code]}{uid:05d}.png"
                (written.folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (written.folder / rel).write_bytes(_png(image))
                written.images[rel], written.labels[rel], written.splits[rel] = image, label, code
                written.csv_rows.append([str(label), " ".join(map(str, image.ravel())), USAGE[code]])
                written.csv_images.append(image)
    written.rels = sorted(written.images)
    order = rng.permutation(len(written.csv_rows))
    written.csv_rows = [written.csv_rows[i] for i in order]
    written.csv_images = [written.csv_images[i] for i in order]
    return written


def _write_csv(written: Written) -> None:
    with written.csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(written.csv_rows)


def _expected_from_folder(written: Written, rels: list[str]) -> dict[str, np.ndarray]:
    return {
        "images": np.stack([written.images[rel] for rel in rels]),
        "labels": np.array([written.labels[rel] for rel in rels]),
        "splits": np.array([written.splits[rel] for rel in rels]),
        "names": np.array(rels),
    }


def _expected_from_csv(written: Written, rows: list[int]) -> dict[str, np.ndarray]:
    return {
        "images": np.stack([written.csv_images[i] for i in rows]),
        "labels": np.array([int(written.csv_rows[i][0]) for i in rows]),
        "splits": np.array([{v: k for k, v in USAGE.items()}[written.csv_rows[i][2]] for i in rows]),
        "names": np.array([f"fer2013.csv:row{i + 1}" for i in rows]),
    }


class_counts = st.lists(st.tuples(st.integers(2, 3), st.integers(0, 1), st.integers(1, 2)), min_size=7, max_size=7)
policies = st.sampled_from([ReadPolicy(*values) for values in itertools.product(*POLICY_CHOICES.values())])
PROPERTY_SETTINGS = settings(max_examples=20, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(counts=class_counts, seed=st.integers(0, 2**32 - 1), form=st.sampled_from(["folder", "zip", "csv"]),
       policy=policies)
def test_any_valid_dataset_reads_back_exactly_under_any_policy(counts: list[tuple[int, int, int]], seed: int,
                                                               form: str, policy: ReadPolicy) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written = _write_random_fer(Path(tmp), counts, seed)
        if form == "csv":
            _write_csv(written)
            expected = _expected_from_csv(written, list(range(len(written.csv_rows))))
        else:
            expected = _expected_from_folder(written, written.rels)
            if form == "zip":
                _zip_folder(written.folder, written.zip)
        arrays = read_source(getattr(written, form), policy)
        _assert_same(arrays, expected)
        assert arrays.problems.clean
        assert arrays.has_official_val == any(val for _, val, _ in counts)


IMAGE_DAMAGE = ["truncate", "zero", "random_bytes", "colour", "wrong_size", "not_image"]
ROW_DAMAGE = {"pixel_token": "bad_pixels", "pixel_count": "bad_pixels", "pixel_range": "bad_pixels",
              "label_range": "bad_label", "label_text": "bad_label", "field_count": "bad_fields",
              "usage": "bad_usage"}


def _damage_image(data: st.DataObject, written: Written, rel: str, damage: str) -> tuple[str, np.ndarray | None]:
    """Damage one image file; returns the kind a rejection counts it as, and the image expected if accepted."""
    path = written.folder / rel
    original = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(original[: data.draw(st.integers(1, len(original) - 1), label="keep_bytes")])
        return "corrupt", None
    if damage == "zero":
        path.write_bytes(b"")
        return "empty", None
    if damage == "random_bytes":  # a leading 0x01 matches no image format's signature
        path.write_bytes(b"\x01" + data.draw(st.binary(min_size=0, max_size=300), label="junk"))
        return "corrupt", None
    if damage == "colour":
        gray = written.images[rel]
        bgr = np.dstack([gray, 255 - gray, gray // 2 if data.draw(st.booleans(), label="dim_red") else gray])
        path.write_bytes(_png(bgr))
        return "color", cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if damage == "wrong_size":
        h, w = data.draw(st.tuples(st.integers(8, 96), st.integers(8, 96)).filter(lambda s: s != (48, 48)),
                         label="size")
        image = np.random.default_rng(h * 100 + w).integers(0, 256, size=(h, w), dtype=np.uint8)
        path.write_bytes(_png(image))
        return "wrong_size", cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA)
    raise AssertionError(damage)


# Which option lets a damage through instead of rejecting it (others are always rejected).
ACCEPTING = {"colour": ("color", "convert", "error"), "wrong_size": ("wrong_size", "resize", "error")}
# Every (form, damage, outcome) is a case of its own, so no combination can go untested by chance.
CORRUPTION_CASES = [
    (form, damage, outcome)
    for form, damages in (("folder", IMAGE_DAMAGE), ("zip", [*IMAGE_DAMAGE, "crc"]), ("csv", sorted(ROW_DAMAGE)))
    for damage in damages
    for outcome in ("error", "skip", *(["accept"] if damage in ACCEPTING else []))
]


def _policy_for(data: st.DataObject, damage: str, outcome: str) -> ReadPolicy:
    """A random policy that must give `outcome` for `damage`; the options that do not matter vary freely."""
    drawn = dict(zip(POLICY_CHOICES, data.draw(st.sampled_from(list(itertools.product(*POLICY_CHOICES.values()))),
                                                label="policy")))
    if outcome != "accept":
        drawn["bad_images"] = outcome
    if damage in ACCEPTING:
        key, accept, reject = ACCEPTING[damage]
        drawn[key] = accept if outcome == "accept" else reject
    return ReadPolicy(**drawn)


@pytest.mark.parametrize(("form", "damage", "outcome"), CORRUPTION_CASES)
@settings(PROPERTY_SETTINGS, max_examples=3)
@given(counts=class_counts, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_a_random_corruption_is_named_or_skipped_and_recorded(form: str, damage: str, outcome: str,
                                                              counts: list[tuple[int, int, int]], seed: int,
                                                              data: st.DataObject) -> None:
    policy = _policy_for(data, damage, outcome)
    with tempfile.TemporaryDirectory() as tmp:
        written = _write_random_fer(Path(tmp), counts, seed)
        fixed: np.ndarray | None = None  # the victim's image when the policy converts/resizes instead of rejecting
        if form == "csv":
            row = data.draw(st.integers(0, len(written.csv_rows) - 1), label="row")
            written.csv_rows[row] = _damage_row(data, written.csv_rows[row], damage)
            _write_csv(written)
            kind, record, in_message = ROW_DAMAGE[damage], f"fer2013.csv:row{row + 1}", f"row {row + 1} (line"
            survivors = _expected_from_csv(written, [i for i in range(len(written.csv_rows)) if i != row])
        else:
            rel = data.draw(st.sampled_from(written.rels), label="victim")
            if damage == "not_image":  # an extra file next to the victim; every image survives
                rel = rel.rsplit("/", 1)[0] + "/notes.txt"
                (written.folder / rel).write_text(data.draw(st.text(max_size=50), label="text"))
                kind = "not_image"
            elif damage != "crc":
                kind, fixed = _damage_image(data, written, rel, damage)
            if form == "zip":
                _zip_folder(written.folder, written.zip)
            if damage == "crc":
                _flip_byte_in_member(written.zip, rel)
                kind = "unreadable"
            record = f"fer2013.zip:{rel}" if form == "zip" else f"fer_folder/{rel}"
            in_message = rel
            survivors = _expected_from_folder(written, [r for r in written.rels if r != rel])
        note(f"policy={policy} kind={kind} record={record}")

        if outcome == "error":
            with pytest.raises(BadItemError) as err:
                read_source(getattr(written, form), policy)
            assert in_message in str(err.value)
            assert (err.value.kind, err.value.name) == (kind, record)
            return
        arrays = read_source(getattr(written, form), policy)
        if outcome == "accept":  # converted or resized: every item is there, the victim as the policy made it
            assert fixed is not None
            expected = _expected_from_folder(written, written.rels)
            expected["images"][written.rels.index(rel)] = fixed
            _assert_same(arrays, expected)
            assert (arrays.problems.converted_color, arrays.problems.resized) == (
                ((record,), ()) if kind == "color" else ((), (record,)))
            assert not arrays.problems.skipped
        else:  # skipped: exactly the untouched items, and the record names the victim
            _assert_same(arrays, survivors)
            assert [(item.kind, item.name) for item in arrays.problems.skipped] == [(kind, record)]
            assert not arrays.problems.converted_color and not arrays.problems.resized


def _damage_row(data: st.DataObject, fields: list[str], damage: str) -> list[str]:
    label, pixels, usage = fields
    values = pixels.split()
    at = data.draw(st.integers(0, len(values) - 1), label="pixel")
    if damage == "pixel_token":
        values[at] = data.draw(st.sampled_from(["a", "1.5", "x7", "--3", "1e2", "0x1"]), label="token")
    elif damage == "pixel_count":
        values = values[:at] + values[at + 1:] if data.draw(st.booleans(), label="drop") else [*values, "0"]
    elif damage == "pixel_range":
        values[at] = data.draw(st.sampled_from(["256", "-1", "1000"]), label="value")
    elif damage == "label_range":
        label = data.draw(st.sampled_from(["-1", "7", "8", "100"]), label="label")
    elif damage == "label_text":
        label = data.draw(st.sampled_from(["x", "1.0", "", "happy"]), label="label")
    elif damage == "field_count":
        return [label, pixels] if data.draw(st.booleans(), label="drop_field") else [label, pixels, usage, "extra"]
    elif damage == "usage":
        usage = data.draw(st.sampled_from(["Validation", "", "publictest", "Train"]), label="usage")
    return [label, " ".join(values), usage]
