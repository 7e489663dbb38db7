"""Labelled faces from outside FER2013 (CK+, JAFFE, a user's own set): one folder per class, any size or colour.

A FER2013 score says how well a model learned FER2013; a face set from another lab, camera and population says how
well it learned facial expressions. Such sets name their classes in their own words (CK+: `anger`, `sadness`,
`contempt`) and may hold classes FER2013 lacks, so a `label_map` renames folders onto the 7 FER2013 classes, and a
class mapped to `null` is dropped (counted, never silently). The faces are decoded as the FER2013 readers decode
theirs (gray, 48x48; here any size is resized, since no other set ships FER2013's crops) and every unusable file
is named in one error.

These sets are only ever *scored*: training adds them as extra test sets after the epoch has been chosen on
PublicTest (`extra_test=ckplus`), and `python -m fer_lightning.evaluate extra_test=ckplus` reports them beside
PublicTest/PrivateTest. Nothing selects on them.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_lightning.data.readers import (
    _EXTRACT_ERRORS,
    _JUNK,
    IMAGE_EXTENSIONS,
    BadItemError,
    ReadPolicy,
    _bad,
    _natural_key,
    _ProblemLog,
    decode_gray,
)
from fer_lightning.errors import FERLightningError
from fer_lightning.labels import EMOTION_TO_ID, EMOTIONS

log = logging.getLogger(__name__)

# Other sets are not FER2013's 48x48 gray crops: resizing and converting them is the point, not a problem.
FOLDER_POLICY = ReadPolicy(bad_images="error", wrong_size="resize", color="convert")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class FolderFacesError(FERLightningError, ValueError):
    """A labelled face folder or its label map cannot be used; the message names every offending folder or key."""


@dataclass(frozen=True)
class LabelledFaces:
    """Decoded faces of one extra test set, labels in `EMOTIONS` order, with what was dropped and why."""

    name: str
    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64 in EMOTIONS order
    files: tuple[str, ...]  # each face's path inside the source, for per-face analysis
    source: str
    dropped: dict[str, int] = field(default_factory=dict)  # source folder -> faces left out by the label map
    skipped: tuple[str, ...] = ()  # unusable files left out under bad_images=skip

    @property
    def classes(self) -> tuple[str, ...]:
        """The FER2013 classes this set has faces of, in `EMOTIONS` order: what per-class numbers and macro-F1
        are computed over (CK+ has no neutral; a class it lacks has no recall)."""
        present = set(np.unique(self.labels).tolist())
        return tuple(name for i, name in enumerate(EMOTIONS) if i in present)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(EMOTIONS))
        return {name: int(counts[i]) for i, name in enumerate(EMOTIONS) if counts[i]}

    def describe(self) -> dict:
        """What metrics.json records about the set, so a number is never read without knowing what it covers."""
        return {"source": self.source, "faces": int(len(self.labels)), "classes": list(self.classes),
                "class_counts": self.class_counts(), "dropped": dict(self.dropped), "skipped": len(self.skipped)}


def resolve_label_map(label_map: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Folder name (lower case) -> FER2013 class or None (drop); every bad target named in one error."""
    resolved: dict[str, str | None] = {}
    bad = []
    for folder, target in (label_map or {}).items():
        key = str(folder).strip().lower()
        if target is None or str(target).strip().lower() in ("null", "none", "drop", ""):
            resolved[key] = None
        elif str(target).strip().lower() in EMOTION_TO_ID:
            resolved[key] = str(target).strip().lower()
        else:
            bad.append(f"{folder}: {target}")
    if bad:
        raise FolderFacesError(f"label_map maps onto unknown class(es) ({'; '.join(bad)}); map each folder onto one "
                               f"of {', '.join(EMOTIONS)}, or onto null to drop it")
    return resolved


@contextmanager
def _entries(root: Path) -> Iterator[tuple[str, list[tuple[str, Callable[[], bytes]]]]]:
    """(source label, [(relative path, reader)] for every file) of a folder or a .zip, read in place."""
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
        yield str(root), [(p.relative_to(root).as_posix(), p.read_bytes) for p in files]
    elif root.is_file() and zipfile.is_zipfile(root):
        with zipfile.ZipFile(root) as archive:
            def read(member: str) -> Callable[[], bytes]:
                return lambda: archive.read(member)
            members = sorted(info.filename for info in archive.infolist() if not info.is_dir())
            yield str(root), [(member, read(member)) for member in members]
    elif not root.exists():
        raise FileNotFoundError(f"labelled face folder not found: {root} (a folder or .zip with one folder per class)")
    else:
        raise FolderFacesError(f"{root}: neither a folder nor a .zip archive")


def read_labelled_folder(root: str | Path, label_map: Mapping[str, str | None] | None = None,
                         policy: ReadPolicy = FOLDER_POLICY, name: str = "folder") -> LabelledFaces:
    """Faces under `<root>/[any/prefix/]<class>/<image>`; the class is the image's folder, renamed by `label_map`.

    Folders named after a FER2013 class need no entry. A folder neither named so nor in the map stops the read,
    every such folder named at once: guessing what `contempt` should count as would change the number.
    """
    root = Path(root).expanduser()
    mapping = resolve_label_map(label_map)
    with _entries(root) as (source, entries):
        return _read_entries(source, entries, mapping, policy, name)


def _read_entries(source: str, entries: list[tuple[str, Callable[[], bytes]]], mapping: dict[str, str | None],
                  policy: ReadPolicy, name: str) -> LabelledFaces:
    problems = _ProblemLog(policy)
    items: list[tuple[str, str, Callable[[], bytes]]] = []  # (rel path, class, reader)
    dropped: Counter[str] = Counter()
    unknown: dict[str, int] = {}
    # The class folders hold the deepest images: in `CK+48_dev/anger/x.png` (a zip of the downloaded folder) the
    # class is `anger`, and `CK+48_dev/README.txt` or `CK+48_dev/cover.png` lie beside the class folders, as a
    # licence beside `anger/` does in a plain folder: no face of any class, and no folder to map.
    depth = max((rel.count("/") for rel, _ in entries if rel.lower().endswith(IMAGE_EXTENSIONS)
                 and not _JUNK.search(rel)), default=1)
    for rel, read in entries:
        if _JUNK.search(rel) or rel.count("/") < max(depth, 1):
            continue  # archive metadata, or a file beside (or above) the class folders
        if not rel.lower().endswith(IMAGE_EXTENSIONS):
            problems.reject(_bad("not_image", rel, f"{source}:{rel}",
                                 f"not an image file (expected {', '.join(IMAGE_EXTENSIONS)})"))
            continue
        folder = rel.rsplit("/", 2)[-2]
        key = folder.strip().lower()
        target = mapping[key] if key in mapping else (key if key in EMOTION_TO_ID else "?")
        if target == "?":
            unknown[folder] = unknown.get(folder, 0) + 1
        elif target is None:
            dropped[folder] += 1
        else:
            items.append((rel, target, read))
    if unknown:
        listed = ", ".join(f"{folder}/ ({n} images)" for folder, n in sorted(unknown.items()))
        raise FolderFacesError(f"{source}: folder(s) {listed} are not FER2013 classes and not in label_map; add them "
                               f"(e.g. label_map.{next(iter(sorted(unknown)))}=<class> or =null to drop), classes: "
                               f"{', '.join(EMOTIONS)}")
    images, labels, files = [], [], []
    for rel, target, read in sorted(items, key=lambda item: _natural_key(item[0])):
        try:
            try:
                data = read()
            except _EXTRACT_ERRORS as err:
                raise _bad("unreadable", rel, f"{source}:{rel}", f"cannot be read ({type(err).__name__})") from err
            decoded = decode_gray(data, f"{source}:{rel}", policy, rel)
        except BadItemError as err:
            problems.reject(err)
            continue
        images.append(decoded.image)
        labels.append(EMOTION_TO_ID[target])
        files.append(rel)
    problems.raise_rejected(source)
    if not images:
        raise FolderFacesError(f"{source}: no usable labelled images (expected <class>/<image> folders)")
    if dropped:
        log.info("%s: left out by the label map: %s", name,
                 ", ".join(f"{folder}/ ({n})" for folder, n in sorted(dropped.items())))
    return LabelledFaces(name=name, images=np.stack(images), labels=np.asarray(labels, dtype=np.int64),
                         files=tuple(files), source=source, dropped=dict(sorted(dropped.items())),
                         skipped=tuple(item.name for item in problems.freeze().skipped))


@dataclass(frozen=True)
class FolderTestSet:
    """`extra_test.<name>`: an extra test set as Hydra instantiates it; `load()` reads it (no cache: such sets are
    small, CK+ dev is 467 files, and re-reading keeps a changed folder from being scored stale)."""

    name: str
    root: str
    label_map: Mapping[str, str | None] = field(default_factory=dict)
    bad_images: str = "error"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise FolderFacesError(f"extra test set name {self.name!r} must be lower case letters, digits and _ "
                                   "(it becomes the metric key test/<name>/acc)")
        resolve_label_map(self.label_map)  # a bad map fails at start-up, before any training

    def load(self) -> LabelledFaces:
        policy = ReadPolicy(bad_images=self.bad_images, wrong_size="resize", color="convert")
        return read_labelled_folder(self.root, self.label_map, policy, self.name)


def instantiate_extra_tests(node: Mapping | None) -> list[FolderTestSet]:
    """The `extra_test` config node (name -> set config, null entries off) as test sets, in config order."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    sets = []
    for key, entry in (node or {}).items():
        if entry is None:
            continue
        missing = [f"extra_test.{key}.{field}" for field in entry
                   if isinstance(entry, DictConfig) and OmegaConf.is_missing(entry, field)]
        if missing:  # `extra_test=folder` alone: say what to add, not OmegaConf's MissingMandatoryValue traceback
            raise FolderFacesError(f"{', '.join(missing)} is not set: write e.g. extra_test.{key}.root=PATH (a "
                                   "folder or .zip of <class>/<image> faces)")
        try:
            test_set = instantiate(entry)
        except InstantiationException as err:
            # Hydra wraps what the constructor refused (a label_map onto no FER2013 class, a bad name); the user's
            # error reaches the command line as itself, one line, not as a wrapped traceback.
            if isinstance(err.__cause__, FERLightningError):
                raise err.__cause__ from None
            raise
        if test_set.name != key:
            raise FolderFacesError(f"extra_test.{key} has name={test_set.name!r}; the key and the name must agree")
        sets.append(test_set)
    return sets
