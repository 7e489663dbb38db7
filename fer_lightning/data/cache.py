"""Decode-once cache: FER2013 is decoded a single time into a compact uint8 `.npz`; epochs read memory.

The cache key is a fingerprint of the source (path, sizes, modification times) and the reader version, so a
changed or replaced download is decoded again. Writes go to a temporary file that is renamed into place, so a
process killed mid-write never leaves a file that a later run trusts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fer_lightning.data.readers import FERArrays

log = logging.getLogger(__name__)

# Bump when readers change what they return, so caches written by older code are rebuilt.
CACHE_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """`$FER_LIGHTNING_CACHE`, else `~/.cache/fer_lightning` (outside the repo, shared by all runs)."""
    return Path(os.environ.get("FER_LIGHTNING_CACHE", Path.home() / ".cache" / "fer_lightning"))


def source_fingerprint(source: Path) -> str:
    """Hash of what identifies the source's content cheaply: every file's relative path, size and mtime."""
    source = Path(source).resolve()
    digest = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}|{source}".encode())
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(source.parent)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _cache_stem(source: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(source).resolve().name) or "source"


def _save_atomic(arrays: FERArrays, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, images=arrays.images, labels=arrays.labels, splits=arrays.splits, names=arrays.names)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _load(target: Path) -> FERArrays:
    with np.load(target, allow_pickle=False) as data:
        return FERArrays(images=data["images"], labels=data["labels"], splits=data["splits"], names=data["names"])


def load_or_build(source: Path, cache_dir: Path | None, build: Callable[[], FERArrays]) -> FERArrays:
    """Return the cached arrays for `source`, decoding with `build` only when no valid cache exists.

    `cache_dir=None` disables caching (decode every time), which tests and read-only machines may want.
    """
    if cache_dir is None:
        return build()
    cache_dir = Path(cache_dir)
    stem = _cache_stem(source)
    target = cache_dir / f"{stem}-{source_fingerprint(source)[:20]}.npz"
    if target.exists():
        try:
            arrays = _load(target)
            log.info("Loaded decoded FER2013 from cache %s", target)
            return arrays
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning("Cache %s is unreadable (%s); decoding the source again", target, err)
    arrays = build()
    _save_atomic(arrays, target)
    for stale in cache_dir.glob(f"{stem}-*.npz"):
        if stale != target:
            stale.unlink(missing_ok=True)
            log.info("Removed stale cache %s (its source changed)", stale)
    log.info("Decoded %d images from %s; cached at %s", len(arrays.images), source, target)
    return arrays
