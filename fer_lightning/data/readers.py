"""Readers for every form FER2013 is downloaded in, all returning the same `FERArrays`.

Forms: the Kaggle image folders (`train/<emotion>/`, `test/<emotion>/`), the same folders inside a `.zip`
(read in place, no unzip), and the original CSV (`emotion,pixels,Usage`, or the `icml_face_data.csv` variant
whose header has leading spaces).

Broken downloads are common (truncated archives, zero-byte files, re-uploads with RGB or resized images), so
every item that cannot be used as is goes through one `ReadPolicy`: by default the reader reads the whole source,
then stops with one message naming every unusable file or row (so one rerun after fixing them is enough, not one
per file); when the config allows it, the item is skipped, converted or resized and recorded in
`FERArrays.problems`, which the run's log and `metrics.json` report. Nothing is dropped silently. Layout problems
(a missing, unknown or empty emotion folder, a CSV without a `Usage` column) always stop at once.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np

from fer_lightning.data.download import KAGGLE_URL
from fer_lightning.errors import FERLightningError
from fer_lightning.labels import EMOTION_TO_ID, EMOTIONS, NUM_CLASSES, SPLIT_NAMES, TEST, TRAIN, USAGE_TO_SPLIT, VAL

log = logging.getLogger(__name__)

IMAGE_SIZE = 48
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Entries archive tools add that are not data; they are counted and logged, never read.
_JUNK = re.compile(r"(^|/)(__MACOSX/|\.[^/]*$|Thumbs\.db$|desktop\.ini$)")
_SPLIT_DIR = re.compile(r"^(?P<prefix>(?:.*/)?)(?P<split>train|test)/(?P<emotion>[^/]+)/(?P<file>[^/]+)$")
_EMOTION_DIR = re.compile(r"^(?P<prefix>(?:.*/)?)(?P<split>train|test)/(?P<emotion>[^/]+)/$")
_LAYOUT_SPLITS = ("train", "test")
# What can go wrong with one item while reading a zip member or a file; anything else is a bug and propagates.
_EXTRACT_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError)
# Items named one per line in the error for a source with unusable items; the rest are counted. Enough to see the
# pattern (one class folder, one kind of damage) without burying the hint at the end of the message.
MAX_LISTED_ITEMS = 20

BadImagesPolicy = Literal["error", "skip"]
WrongSizePolicy = Literal["error", "resize"]
ColorPolicy = Literal["convert", "error"]
POLICY_CHOICES: dict[str, tuple[str, ...]] = {
    "bad_images": ("error", "skip"),
    "wrong_size": ("error", "resize"),
    "color": ("convert", "error"),
}


class FER2013FormatError(FERLightningError, ValueError):
    """The source exists but does not look like FER2013; the message names the file, row or key."""


class BadItemError(FER2013FormatError):
    """One image or CSV row is unusable; `kind` is how it is counted when `data.bad_images=skip` skips it.

    `name` is the short record name (as in metrics.json), `where` the item as messages name it (a full path, or a
    CSV row with its line), `reason` what is wrong with it; the message is `where: reason`.
    """

    def __init__(self, kind: str, name: str, message: str, *, where: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.where = where or name
        self.reason = reason or message
        self.problems: list[tuple[str, str]] = [(self.where, self.reason)]  # (item, reason), as for many items

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickles `args` only, which cannot rebuild this signature; errors cross process boundaries
        # (DDP ranks, joblib launcher jobs) and must arrive intact.
        return _rebuild_bad_item, (type(self), self.kind, self.name, str(self), self.where, self.reason)


def _rebuild_bad_item(cls: type[BadItemError], kind: str, name: str, message: str, where: str,
                      reason: str) -> BadItemError:
    return cls(kind, name, message, where=where, reason=reason)


def _bad(kind: str, record: str, where: str, reason: str) -> BadItemError:
    return BadItemError(kind, record, f"{where}: {reason}", where=where, reason=reason)


class BadItemsError(BadItemError):
    """Every unusable item of a source, found in one pass: a broken download is fixed in one go, not one rerun per
    file.

    Raised under `data.bad_images=error` once the whole source has been read. `kind` and `name` are those of the
    first item (in record order), so code written for the one-item error keeps working; `problems` holds every
    `(item, reason)`, all of them even past the `shown` the message lists, and `items` the same as
    `SkippedItem`s, i.e. what `data.bad_images=skip` would record.
    """

    def __init__(self, source: str, errors: Sequence[BadItemError], shown: int = MAX_LISTED_ITEMS) -> None:
        if not errors:
            raise ValueError("BadItemsError needs at least one unusable item")
        ordered = sorted(errors, key=lambda error: _natural_key(error.name))
        counts = ", ".join(f"{kind}={n}" for kind, n in sorted(Counter(e.kind for e in ordered).items()))
        lines = [f"{source}: {len(ordered)} unusable item(s) ({counts}):"]
        lines += [f"  {error}" for error in ordered[:shown]]
        if len(ordered) > shown:
            lines.append(f"  ... and {len(ordered) - shown} more")
        lines.append("Replace or remove them (a fresh download usually fixes them), or set data.bad_images=skip to "
                     "leave them out: skipped items are counted in metrics.json under data_problems.")
        first = ordered[0]
        super().__init__(first.kind, first.name, "\n".join(lines), where=first.where, reason=first.reason)
        self.source = source
        self.errors = tuple(ordered)
        self.items = tuple(SkippedItem(error.kind, error.name, str(error)) for error in ordered)
        self.problems = [(error.where, error.reason) for error in ordered]
        self._shown = shown

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.source, self.errors, self._shown)


@dataclass(frozen=True)
class ReadPolicy:
    """What the readers do with an item they cannot use as is; set from `data.bad_images|wrong_size|color`.

    `bad_images` decides the fate of every rejected item: undecodable, empty or non-image files, bad CSV rows, and
    wrong-size or colour images that `wrong_size=error` / `color=error` reject. `error` stops the run naming the
    item; `skip` leaves it out and records it. Colour is converted by default because FER-like re-uploads ship RGB
    JPEGs of gray faces, which lose nothing in conversion; a size other than 48x48 is refused by default because
    it means the files are not FER2013's crops, and silently rescaling them would change the benchmark.
    """

    bad_images: BadImagesPolicy = "error"
    wrong_size: WrongSizePolicy = "error"
    color: ColorPolicy = "convert"

    def __post_init__(self) -> None:
        for key, allowed in POLICY_CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise FER2013FormatError(f"data.{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")

    @property
    def cache_tag(self) -> str:
        """One letter per option (e.g. `eec` by default): decodes made under different policies never mix."""
        return "".join(getattr(self, key)[0] for key in POLICY_CHOICES)


DEFAULT_POLICY = ReadPolicy()


class SkippedItem(NamedTuple):
    kind: str
    name: str
    reason: str


@dataclass(frozen=True)
class ReadProblems:
    """Every item a reader skipped or altered, so a run can account for each file of its source.

    Names are `<source name>/<path>` for folders, `<archive>.zip:<member>` for zips and `<file>.csv:row<N>` for
    CSVs: enough to find the item, short enough for metrics.json.
    """

    skipped: tuple[SkippedItem, ...] = ()
    converted_color: tuple[str, ...] = ()
    resized: tuple[str, ...] = ()
    outside_layout: tuple[str, ...] = ()  # image files outside train|test/<emotion>/, which are never data

    @property
    def clean(self) -> bool:
        return not (self.skipped or self.converted_color or self.resized or self.outside_layout)

    def skipped_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(item.kind for item in self.skipped).items()))

    def summary(self, max_examples: int = 10) -> dict[str, Any]:
        """The `data_problems` entry of `describe()`: counts, and the first few names to go and look at."""
        examples = [f"{item.name} ({item.kind})" for item in self.skipped]
        for label, names in (("converted_color", self.converted_color), ("resized", self.resized),
                             ("outside_layout", self.outside_layout)):
            examples += [f"{name} ({label})" for name in names]
        return {
            "skipped": self.skipped_counts(),
            "skipped_total": len(self.skipped),
            "converted_color": len(self.converted_color),
            "resized": len(self.resized),
            "outside_layout": len(self.outside_layout),
            "examples": examples[:max_examples],
        }

    def to_json(self) -> str:
        return json.dumps({"skipped": [list(item) for item in self.skipped], "converted_color": self.converted_color,
                           "resized": self.resized, "outside_layout": self.outside_layout})

    @classmethod
    def from_json(cls, text: str) -> ReadProblems:
        data = json.loads(text)
        return cls(
            skipped=tuple(SkippedItem(*item) for item in data["skipped"]),
            converted_color=tuple(data["converted_color"]),
            resized=tuple(data["resized"]),
            outside_layout=tuple(data["outside_layout"]),
        )

    def log_warnings(self, source: str | Path, shown: int = 5) -> None:
        """One warning per kind of problem, with the count and the first names, in every run that uses the data."""
        if self.skipped:
            counts = ", ".join(f"{kind}={n}" for kind, n in self.skipped_counts().items())
            first = "; ".join(item.reason for item in self.skipped[:shown])
            log.warning("%s: skipped %d unusable item(s) (data.bad_images=skip): %s. First: %s",
                        source, len(self.skipped), counts, first)
        for what, names in (("converted colour image(s) to gray (data.color=convert)", self.converted_color),
                            ("resized image(s) to 48x48 (data.wrong_size=resize)", self.resized),
                            ("ignored image file(s) outside train|test/<emotion>/", self.outside_layout)):
            if names:
                log.warning("%s: %s %d: %s%s", source, what, len(names), ", ".join(names[:shown]),
                            ", ..." if len(names) > shown else "")


@dataclass(frozen=True)
class FERArrays:
    """Decoded FER2013: uint8 images (N, 48, 48), int64 labels in `EMOTIONS` order, split codes, origins.

    `problems` travels with the arrays (and through the decode cache) so a run that reuses a cache still reports
    what was skipped or altered when it was decoded.
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    names: np.ndarray
    problems: ReadProblems = field(default_factory=ReadProblems)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        for name in ("labels", "splits", "names"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} images")
        if n and not (0 <= self.labels.min() and self.labels.max() < NUM_CLASSES):
            raise ValueError(f"labels must lie in 0-{NUM_CLASSES - 1}, got {self.labels.min()}-{self.labels.max()}")
        if n and not np.isin(self.splits, (TRAIN, VAL, TEST)).all():
            raise ValueError(f"split codes must be {TRAIN}, {VAL} or {TEST}, got {np.unique(self.splits).tolist()}")

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


class _ProblemLog:
    """Collects problems while reading and applies `bad_images`: the one place that decides raise or skip."""

    def __init__(self, policy: ReadPolicy) -> None:
        self.policy = policy
        self.skipped: list[SkippedItem] = []
        self.rejected: list[BadItemError] = []  # under bad_images=error: raised together by `raise_rejected`
        self.converted_color: list[str] = []
        self.resized: list[str] = []
        self.outside_layout: list[str] = []

    def reject(self, error: BadItemError) -> None:
        if self.policy.bad_images == "error":
            # Kept until the whole source is read, so without tracebacks: each would keep its decode's frame and
            # pixels alive, and a re-upload whose every image is the wrong size would hold all of them at once.
            error.with_traceback(None)
            if error.__cause__ is not None:
                error.__cause__.with_traceback(None)
            self.rejected.append(error)
        else:
            self.skipped.append(SkippedItem(error.kind, error.name, str(error)))

    def raise_rejected(self, source: str) -> None:
        """Called once the whole source has been read, so the error lists every unusable item, not the first."""
        if self.rejected:
            raise BadItemsError(source, self.rejected)

    def freeze(self) -> ReadProblems:
        # Sorted so the record does not depend on listing order (folder and zip list differently); numbers in
        # names sort as numbers, so CSV rows stay in file order (row9 before row30).
        return ReadProblems(
            skipped=tuple(sorted(self.skipped, key=lambda item: _natural_key(item.name))),
            converted_color=tuple(sorted(self.converted_color, key=_natural_key)),
            resized=tuple(sorted(self.resized, key=_natural_key)),
            outside_layout=tuple(sorted(self.outside_layout, key=_natural_key)),
        )


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(1, int(part)) if part.isdigit() else (0, part) for part in re.split(r"(\d+)", name)]


class DecodedImage(NamedTuple):
    image: np.ndarray  # (48, 48) uint8
    converted_color: bool
    resized: bool


def _to_gray(image: np.ndarray, name: str, record: str, policy: ReadPolicy) -> tuple[np.ndarray, bool]:
    """Gray from a multi-channel decode; `True` when that changed pixel information (colour or transparency).

    An image whose colour channels are all equal and whose alpha (if any) is fully opaque is gray stored in a
    colour container (common for re-encoded JPEGs): its first channel is taken as is, and it is not counted as
    converted, nor rejected by `color=error`, because no information is lost or altered.
    """
    channels = image.shape[2]
    has_alpha = channels in (2, 4)
    color = image[..., :-1] if has_alpha else image
    opaque = not has_alpha or bool((image[..., -1] == 255).all())
    equal_channels = all(np.array_equal(color[..., c], color[..., 0]) for c in range(1, color.shape[2]))
    if opaque and equal_channels:
        return np.ascontiguousarray(color[..., 0]), False
    if policy.color == "error":
        what = "transparent" if equal_channels else "colour"
        raise _bad("color", record, name, f"{what} image ({channels} channels); FER2013 images are gray "
                                          "(data.color=convert converts them)")
    gray = cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_BGR2GRAY) if color.shape[2] == 3 else color[..., 0]
    return np.ascontiguousarray(gray), True


def decode_gray(data: bytes, name: str, policy: ReadPolicy = DEFAULT_POLICY, record: str | None = None
                ) -> DecodedImage:
    """Decode one image file to 48x48 uint8 gray, applying `policy` to colour and size, or say what is wrong.

    `IMREAD_UNCHANGED` is used rather than `IMREAD_GRAYSCALE` because the latter converts colour silently, and a
    colour image must be counted or refused by `data.color`. `name` goes into messages (a full path),
    `record` into the problem record (a short name); they default to each other.
    """
    record = record or name
    if not data:
        raise _bad("empty", record, name, "empty file (0 bytes); the download is incomplete")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise _bad("corrupt", record, name, f"not a readable image (corrupt, truncated or not an image file, "
                                            f"{len(data)} bytes)")
    if image.dtype != np.uint8:
        raise _bad("bit_depth", record, name, f"{image.dtype} pixels; FER2013 images are 8-bit")
    converted = False
    if image.ndim == 3:
        image, converted = _to_gray(image, name, record, policy)
    resized = image.shape != (IMAGE_SIZE, IMAGE_SIZE)
    if resized:
        h, w = image.shape
        if policy.wrong_size == "error":
            raise _bad("wrong_size", record, name, f"image is {w}x{h} pixels; FER2013 images are "
                                                   f"{IMAGE_SIZE}x{IMAGE_SIZE} (data.wrong_size=resize resizes)")
        # INTER_AREA: the least aliasing when shrinking, the usual case; non-square images are stretched, as
        # FER2013's own crops are square faces.
        image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return DecodedImage(image, converted, resized)


def _split_of(layout_split: str, file_name: str) -> int | None:
    """Official split from the layout: train/ is Training; in test/ the file-name prefix tells the halves apart."""
    if layout_split == "train":
        return TRAIN
    if file_name.startswith("PublicTest_"):
        return VAL
    if file_name.startswith("PrivateTest_"):
        return TEST
    return None


class _LayoutItem(NamedTuple):
    rel: str
    split: str  # "train" or "test" (the folder, not yet the official split)
    emotion: str
    read: Callable[[], bytes]


def _known_emotion(emotion: str, split: str, rel: str, source: str) -> str:
    if emotion.lower() not in EMOTION_TO_ID:
        raise FER2013FormatError(
            f"{source}: unknown emotion folder '{split}/{emotion}/' (at {rel}); "
            f"expected folders named {', '.join(sorted(EMOTIONS))}"
        )
    return emotion.lower()


def _check_emotion_folders(source: str, folders: set[tuple[str, str]], items: list[_LayoutItem]) -> None:
    """All 7 folders must exist in train/ and test/ and hold images: FER2013 has every class in both."""
    missing = [f"{split}/{emotion}/" for split in _LAYOUT_SPLITS for emotion in EMOTIONS
               if (split, emotion) not in folders]
    if missing:
        raise FER2013FormatError(
            f"{source}: missing emotion folder(s) {', '.join(missing)}; FER2013 has all of "
            f"{', '.join(EMOTIONS)} in both train/ and test/ (the download is incomplete?)"
        )
    filled = {(item.split, item.emotion) for item in items}
    empty = [f"{split}/{emotion}/" for split, emotion in sorted(folders - filled)]
    if empty:
        raise FER2013FormatError(f"{source}: emotion folder(s) {', '.join(empty)} hold no image files")


def _arrays_from_entries(entries: Iterable[tuple[str, Callable[[], bytes] | None]], source: str, sep: str,
                         policy: ReadPolicy) -> FERArrays:
    """Shared body of the folder and zip readers: parse the layout, decode each image once, check splits.

    `entries` yields `(relative path, reader)`, with `reader=None` and a trailing `/` for folders, so that an
    emotion folder without files is seen. Items are named `source + sep + rel` in messages and
    `<source name> + sep + rel` in the problem record.
    """
    short = Path(source).name
    problems = _ProblemLog(policy)
    items: list[_LayoutItem] = []
    folders: set[tuple[str, str]] = set()
    junk = 0
    for rel, read in entries:
        if _JUNK.search(rel.rstrip("/")):
            junk += 1
            continue
        if read is None:
            folder = _EMOTION_DIR.match(rel)
            if folder is not None:
                folders.add((folder["split"], _known_emotion(folder["emotion"], folder["split"], rel, source)))
            continue
        match = _SPLIT_DIR.match(rel)
        if match is None:
            if rel.lower().endswith(IMAGE_EXTENSIONS):
                problems.outside_layout.append(f"{short}{sep}{rel}")
            continue  # other files outside train/<emotion>/ and test/<emotion>/ (e.g. a README) are not data
        emotion = _known_emotion(match["emotion"], match["split"], rel, source)
        folders.add((match["split"], emotion))
        if not match["file"].lower().endswith(IMAGE_EXTENSIONS):
            problems.reject(_bad("not_image", f"{short}{sep}{rel}", f"{source}{sep}{rel}",
                                 f"not an image file (expected {', '.join(IMAGE_EXTENSIONS)})"))
            continue
        items.append(_LayoutItem(rel, match["split"], emotion, read))
    if junk:
        log.info("%s: ignored %d archive metadata entries (__MACOSX/, hidden files)", source, junk)
    if not any(item.split == "train" for item in items) and not any(split == "train" for split, _ in folders):
        raise FER2013FormatError(f"{source}: no images under train/<emotion>/; is this the FER2013 image archive?")
    if not any(item.split == "test" for item in items) and not any(split == "test" for split, _ in folders):
        raise FER2013FormatError(f"{source}: no images under test/<emotion>/; the archive seems incomplete")
    _check_emotion_folders(source, folders, items)

    items.sort(key=lambda item: item.rel)  # folder and zip listings differ in order; the arrays must not
    splits = [_split_of(item.split, item.rel.rsplit("/", 1)[-1]) for item in items]
    unprefixed = [item.rel for item, code in zip(items, splits) if item.split == "test" and code is None]
    n_test = sum(item.split == "test" for item in items)
    if unprefixed and len(unprefixed) != n_test:
        raise FER2013FormatError(
            f"{source}: test/ mixes files with and without PublicTest_/PrivateTest_ prefixes "
            f"(e.g. {unprefixed[0]}); rename them consistently"
        )
    if unprefixed:
        test_dir = f"{_SPLIT_DIR.match(unprefixed[0])['prefix']}test/"
        log.warning(
            "%s%s%s: none of its %d files carries a PublicTest_/PrivateTest_ prefix (e.g. %s), so all of test/ "
            "becomes the test split and validation is carved out of train/ (data.val_fraction; recorded as "
            "val_split in metrics.json)", source, sep, test_dir, n_test, unprefixed[0],
        )

    images = np.empty((len(items), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    keep = np.zeros(len(items), dtype=bool)
    for i, item in enumerate(items):
        name, record = f"{source}{sep}{item.rel}", f"{short}{sep}{item.rel}"
        try:
            try:
                data = item.read()
            except _EXTRACT_ERRORS as err:  # CRC errors, truncated members, unreadable files
                raise _bad("unreadable", record, name, f"cannot be read ({type(err).__name__}: {err})") from err
            decoded = decode_gray(data, name, policy, record)
        except BadItemError as err:
            problems.reject(err)
            continue
        images[i], keep[i] = decoded.image, True
        if decoded.converted_color:
            problems.converted_color.append(record)
        if decoded.resized:
            problems.resized.append(record)
    problems.raise_rejected(source)
    kept_train = {item.emotion for item, kept in zip(items, keep) if kept and item.split == "train"}
    emptied = [f"train/{emotion}/" for emotion in EMOTIONS if emotion not in kept_train]
    if emptied:
        raise FER2013FormatError(f"{source}: every image in {', '.join(emptied)} was skipped as unusable "
                                 "(data.bad_images=skip); a class without training images cannot be learned")
    kept_items = [item for item, kept in zip(items, keep) if kept]
    arrays = FERArrays(
        images=images[keep],
        labels=np.array([EMOTION_TO_ID[item.emotion] for item in kept_items], dtype=np.int64),
        splits=np.array([TEST if code is None else code for code, kept in zip(splits, keep) if kept],
                        dtype=np.uint8),
        names=np.array([item.rel for item in kept_items]),
        problems=problems.freeze(),
    )
    return arrays


def read_image_folder(root: Path, policy: ReadPolicy = DEFAULT_POLICY) -> FERArrays:
    """Kaggle layout on disk: `root/train/<emotion>/*.jpg`, `root/test/<emotion>/*.jpg`."""
    root = Path(root)

    def entries() -> Iterator[tuple[str, Callable[[], bytes] | None]]:
        for path in root.rglob("*"):
            rel = path.relative_to(root).as_posix()
            if path.is_dir():
                yield f"{rel}/", None
            elif path.is_file():
                yield rel, path.read_bytes
    return _arrays_from_entries(entries(), str(root), "/", policy)


def read_zip(path: Path, policy: ReadPolicy = DEFAULT_POLICY) -> FERArrays:
    """The Kaggle archive read in place; a top-level folder inside the zip (e.g. `fer2013/train/`) is fine."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as err:
        raise FER2013FormatError(
            f"{path}: not a valid zip archive ({err}); the download is probably truncated or corrupt: "
            f"download it again ({KAGGLE_URL})"
        ) from err
    with archive:
        def reader(name: str) -> Callable[[], bytes]:
            return lambda: archive.read(name)

        entries = ((info.filename, None if info.is_dir() else reader(info.filename)) for info in archive.infolist())
        return _arrays_from_entries(entries, str(path), ":", policy)


def _parse_pixels(text: str, where: str, record: str) -> np.ndarray:
    values = text.split()
    if len(values) != IMAGE_SIZE * IMAGE_SIZE:
        raise _bad("bad_pixels", record, where, f"'pixels' has {len(values)} values, expected "
                                               f"{IMAGE_SIZE * IMAGE_SIZE} (48x48)")
    try:
        pixels = np.array(values, dtype=np.int32)
    except ValueError as err:
        raise _bad("bad_pixels", record, where, f"'pixels' is not a list of integers ({err})") from err
    if pixels.min() < 0 or pixels.max() > 255:
        raise _bad("bad_pixels", record, where, f"pixel values must lie in 0-255, found {pixels.min()}-{pixels.max()}")
    return pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _parse_row(fields: list[str], columns: tuple[int, int, int], n_columns: int, where: str, record: str
               ) -> tuple[np.ndarray, int, int]:
    i_emotion, i_pixels, i_usage = columns
    if len(fields) != n_columns:
        raise _bad("bad_fields", record, where, f"{len(fields)} fields, the header has {n_columns}")
    try:
        label = int(fields[i_emotion])
    except ValueError:
        raise _bad("bad_label", record, where, f"emotion '{fields[i_emotion]}' is not an integer") from None
    if not 0 <= label < len(EMOTIONS):
        raise _bad("bad_label", record, where, f"emotion {label} is outside 0-{len(EMOTIONS) - 1}")
    usage = fields[i_usage].strip()
    if usage not in USAGE_TO_SPLIT:
        raise _bad("bad_usage", record, where, f"Usage '{usage}' is not one of {sorted(USAGE_TO_SPLIT)}")
    return _parse_pixels(fields[i_pixels], where, record), label, USAGE_TO_SPLIT[usage]


def read_csv(path: Path, policy: ReadPolicy = DEFAULT_POLICY) -> FERArrays:
    """`fer2013.csv` (emotion,pixels,Usage) or `icml_face_data.csv` (emotion, Usage, pixels).

    Rows are numbered from 1 after the header (`row 1` is line 2 of a file without multi-line fields; messages
    give both). A file-level problem (no header, a missing column, no rows) stops even under `bad_images=skip`.
    """
    path = Path(path)
    problems = _ProblemLog(policy)
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
        columns = (header.index("emotion"), header.index("pixels"), header.index("Usage"))
        images, labels, splits, names = [], [], [], []
        for row, fields in enumerate(reader, start=1):
            if not fields:
                continue  # a trailing blank line
            record = f"{path.name}:row{row}"
            try:
                image, label, split = _parse_row(fields, columns, len(header), f"{path}: row {row} (line "
                                                 f"{reader.line_num})", record)
            except BadItemError as err:
                problems.reject(err)
                continue
            images.append(image)
            labels.append(label)
            splits.append(split)
            names.append(record)
    problems.raise_rejected(str(path))
    if not images:
        raise FER2013FormatError(f"{path}: the CSV has a header but no usable rows"
                                 + (f" ({len(problems.skipped)} skipped)" if problems.skipped else ""))
    return FERArrays(
        images=np.stack(images),
        labels=np.array(labels, dtype=np.int64),
        splits=np.array(splits, dtype=np.uint8),
        names=np.array(names),
        problems=problems.freeze(),
    )


def read_source(path: Path, policy: ReadPolicy = DEFAULT_POLICY) -> FERArrays:
    """Dispatch on the form of a resolved source (see `datamodule.resolve_source`); logs any problems."""
    path = Path(path)
    if path.is_dir():
        arrays = read_image_folder(path, policy)
    elif path.suffix.lower() == ".zip":
        arrays = read_zip(path, policy)
    elif path.suffix.lower() == ".csv":
        arrays = read_csv(path, policy)
    else:
        raise FER2013FormatError(f"{path}: unsupported FER2013 source; give a folder, a .zip or a .csv")
    arrays.problems.log_warnings(path)
    return arrays
