"""Readers for every form FER2013 is downloaded in, all returning the same `FERArrays`.

Forms: the Kaggle image folders (`train/<emotion>/`, `test/<emotion>/`), the same folders inside a `.zip`
(read in place, no unzip), and the original CSV (`emotion,pixels,Usage`, or the `icml_face_data.csv` variant
whose header has leading spaces). Readers fail loudly, naming the file or row, instead of skipping data.
"""

from __future__ import annotations

import csv
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.labels import EMOTION_TO_ID, EMOTIONS, SPLIT_NAMES, TEST, TRAIN, USAGE_TO_SPLIT, VAL

log = logging.getLogger(__name__)

IMAGE_SIZE = 48
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Entries archive tools add that are not data; they are counted and logged, never read.
_JUNK = re.compile(r"(^|/)(__MACOSX/|\.[^/]*$|Thumbs\.db$|desktop\.ini$)")
_SPLIT_DIR = re.compile(r"^(?P<prefix>(?:.*/)?)(?P<split>train|test)/(?P<emotion>[^/]+)/(?P<file>[^/]+)$")


class FER2013FormatError(ValueError):
    """The source exists but does not look like FER2013; the message names the file, row or key."""


@dataclass(frozen=True)
class FERArrays:
    """Decoded FER2013: uint8 images (N, 48, 48), int64 labels in `EMOTIONS` order, split codes, origins."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    names: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        for field in ("labels", "splits", "names"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"{field} has {len(getattr(self, field))} entries for {n} images")

    @property
    def has_official_val(self) -> bool:
        """False when the source has no PublicTest marks, so validation must be carved out of train."""
        return bool((self.splits == VAL).any())

    def split_counts(self) -> dict[str, list[int]]:
        """Images per class per split, in `EMOTIONS` order, for logs and sanity checks."""
        return {
            name: np.bincount(self.labels[self.splits == code], minlength=len(EMOTIONS)).tolist()
            for code, name in enumerate(SPLIT_NAMES)
        }


def decode_gray(data: bytes, name: str) -> np.ndarray:
    """Decode one image file to a 48x48 uint8 array, or explain which file is wrong and how."""
    if not data:
        raise FER2013FormatError(f"{name}: empty file (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FER2013FormatError(f"{name}: not a readable image (corrupt, truncated or not an image file)")
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        h, w = image.shape
        raise FER2013FormatError(f"{name}: image is {w}x{h} pixels; FER2013 images are {IMAGE_SIZE}x{IMAGE_SIZE}")
    return image


def _split_of(layout_split: str, file_name: str) -> int | None:
    """Official split from the layout: train/ is Training; in test/ the file-name prefix tells the halves apart."""
    if layout_split == "train":
        return TRAIN
    if file_name.startswith("PublicTest_"):
        return VAL
    if file_name.startswith("PrivateTest_"):
        return TEST
    return None


def _arrays_from_entries(entries: Iterable[tuple[str, Callable[[], bytes]]], source: str) -> FERArrays:
    """Shared body of the folder and zip readers: parse the layout, decode each image once, check splits."""
    parsed: list[tuple[str, str, str, Callable[[], bytes]]] = []
    junk = 0
    for rel, read in entries:
        if _JUNK.search(rel):
            junk += 1
            continue
        match = _SPLIT_DIR.match(rel)
        if match is None:
            continue  # files outside train/<emotion>/ and test/<emotion>/ (e.g. a README) are not data
        emotion, file_name = match["emotion"], match["file"]
        if emotion.lower() not in EMOTION_TO_ID:
            raise FER2013FormatError(
                f"{source}: unknown emotion folder '{match['split']}/{emotion}/' (at {rel}); "
                f"expected folders named {', '.join(sorted(EMOTIONS))}"
            )
        if not file_name.lower().endswith(IMAGE_EXTENSIONS):
            raise FER2013FormatError(f"{source}: {rel} is not an image file (expected {IMAGE_EXTENSIONS})")
        parsed.append((rel, match["split"], emotion.lower(), read))
    if junk:
        log.info("%s: ignored %d archive metadata entries (__MACOSX/, hidden files)", source, junk)
    if not any(split == "train" for _, split, _, _ in parsed):
        raise FER2013FormatError(f"{source}: no images under train/<emotion>/; is this the FER2013 image archive?")
    if not any(split == "test" for _, split, _, _ in parsed):
        raise FER2013FormatError(f"{source}: no images under test/<emotion>/; the archive seems incomplete")

    parsed.sort(key=lambda item: item[0])  # folder and zip listings differ in order; the arrays must not
    splits = [_split_of(split, rel.rsplit("/", 1)[-1]) for rel, split, _, _ in parsed]
    unprefixed = [rel for (rel, split, _, _), code in zip(parsed, splits) if split == "test" and code is None]
    n_test = sum(split == "test" for _, split, _, _ in parsed)
    if unprefixed and len(unprefixed) != n_test:
        raise FER2013FormatError(
            f"{source}: test/ mixes files with and without PublicTest_/PrivateTest_ prefixes "
            f"(e.g. {unprefixed[0]}); rename them consistently"
        )
    if unprefixed:
        log.warning(
            "%s: test/ files carry no PublicTest_/PrivateTest_ prefix: all of test/ is used as the test split",
            source,
        )
    images = np.empty((len(parsed), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, (rel, _, _, read) in enumerate(parsed):
        images[i] = decode_gray(read(), f"{source}:{rel}")
    return FERArrays(
        images=images,
        labels=np.array([EMOTION_TO_ID[e] for _, _, e, _ in parsed], dtype=np.int64),
        splits=np.array([TEST if code is None else code for code in splits], dtype=np.uint8),
        names=np.array([rel for rel, _, _, _ in parsed]),
    )


def read_image_folder(root: Path) -> FERArrays:
    """Kaggle layout on disk: `root/train/<emotion>/*.jpg`, `root/test/<emotion>/*.jpg`."""
    root = Path(root)

    def entries() -> Iterator[tuple[str, Callable[[], bytes]]]:
        for path in root.rglob("*"):
            if path.is_file():
                yield path.relative_to(root).as_posix(), path.read_bytes
    return _arrays_from_entries(entries(), str(root))


def read_zip(path: Path) -> FERArrays:
    """The Kaggle archive read in place; a top-level folder inside the zip (e.g. `fer2013/train/`) is fine."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise FER2013FormatError(f"{path}: not a valid zip archive ({err})") from err
    with archive:
        def reader(name: str) -> Callable[[], bytes]:
            def read() -> bytes:
                try:
                    return archive.read(name)
                except (zipfile.BadZipFile, OSError, EOFError) as err:  # CRC errors, truncation
                    raise FER2013FormatError(f"{path}:{name}: cannot be extracted ({err})") from err
            return read

        entries = ((info.filename, reader(info.filename)) for info in archive.infolist() if not info.is_dir())
        return _arrays_from_entries(entries, str(path))


def _parse_pixels(text: str, row: int, path: Path) -> np.ndarray:
    values = text.split()
    if len(values) != IMAGE_SIZE * IMAGE_SIZE:
        raise FER2013FormatError(
            f"{path}: row {row}: 'pixels' has {len(values)} values, expected {IMAGE_SIZE * IMAGE_SIZE} (48x48)"
        )
    try:
        pixels = np.array(values, dtype=np.int32)
    except ValueError as err:
        raise FER2013FormatError(f"{path}: row {row}: 'pixels' is not a list of integers ({err})") from err
    if pixels.min() < 0 or pixels.max() > 255:
        raise FER2013FormatError(f"{path}: row {row}: pixel values must lie in 0-255")
    return pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def read_csv(path: Path) -> FERArrays:
    """`fer2013.csv` (emotion,pixels,Usage) or `icml_face_data.csv` (emotion, Usage, pixels); row = data line."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [column.strip() for column in next(reader)]
        except StopIteration:
            raise FER2013FormatError(f"{path}: empty CSV file") from None
        missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
        if missing:
            raise FER2013FormatError(
                f"{path}: missing column(s) {missing}; found {header}. FER2013 CSVs have emotion, pixels, Usage"
            )
        i_emotion, i_pixels, i_usage = (header.index(c) for c in ("emotion", "pixels", "Usage"))
        images, labels, splits = [], [], []
        # `row` counts data rows from 1 (the header is line 1 of the file, data row 1 is line 2).
        for row, fields in enumerate(reader, start=1):
            if not fields:
                continue  # a trailing blank line
            if len(fields) != len(header):
                raise FER2013FormatError(
                    f"{path}: row {row} (line {row + 1}): {len(fields)} fields, header has {len(header)}"
                )
            try:
                label = int(fields[i_emotion])
            except ValueError:
                raise FER2013FormatError(
                    f"{path}: row {row}: emotion '{fields[i_emotion]}' is not an integer"
                ) from None
            if not 0 <= label < len(EMOTIONS):
                raise FER2013FormatError(f"{path}: row {row}: emotion {label} is outside 0-{len(EMOTIONS) - 1}")
            usage = fields[i_usage].strip()
            if usage not in USAGE_TO_SPLIT:
                raise FER2013FormatError(
                    f"{path}: row {row}: Usage '{usage}' is not one of {sorted(USAGE_TO_SPLIT)}"
                )
            images.append(_parse_pixels(fields[i_pixels], row, path))
            labels.append(label)
            splits.append(USAGE_TO_SPLIT[usage])
    if not images:
        raise FER2013FormatError(f"{path}: the CSV has a header but no rows")
    return FERArrays(
        images=np.stack(images),
        labels=np.array(labels, dtype=np.int64),
        splits=np.array(splits, dtype=np.uint8),
        names=np.array([f"{path.name}:row{row}" for row in range(1, len(images) + 1)]),
    )


def read_source(path: Path) -> FERArrays:
    """Dispatch on the form of a resolved source (see `datamodule.resolve_source`)."""
    path = Path(path)
    if path.is_dir():
        return read_image_folder(path)
    if path.suffix.lower() == ".zip":
        return read_zip(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    raise FER2013FormatError(f"{path}: unsupported FER2013 source; give a folder, a .zip or a .csv")
