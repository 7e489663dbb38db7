"""Decode-once cache: FER2013 is decoded a single time into a compact uint8 `.npz`; epochs read memory.

The cache key is a fingerprint of the source (path, sizes, modification times), the reader policy and the
cache format, so a changed download, or a decode made with `data.bad_images=skip`, is never reused where it
does not apply.

A cache is trusted only if it is complete and consistent: it is written to a temporary file (named after the
writing host and pid), fsynced and renamed into place, so a process killed mid-write leaves at most a `.tmp`
file, which later runs remove once its writer is gone. On load the file is checked against the metadata it
carries (format, policy, count, SHA-256 of the arrays); anything else is warned about and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fer_lightning.data.readers import DEFAULT_POLICY, IMAGE_SIZE, FERArrays, ReadPolicy, ReadProblems
from fer_lightning.errors import FERLightningError

log = logging.getLogger(__name__)

# Bump when readers change what they return, so caches written by older code are rebuilt.
# 2: reader policy in the key, problem record and checksum stored in the file.
CACHE_FORMAT_VERSION = 2
# A temporary file this old is a dead build's leftover even if its pid was reused or it came from another host:
# writing the cache takes seconds (the decode happens before the file is created).
STALE_TMP_AGE_S = 3600.0
_ARRAY_KEYS = ("images", "labels", "splits", "names")
_TMP_NAME = re.compile(r"^\.(?P<target>.+\.npz)\.(?P<host>[^/]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


class CacheInvalidError(FERLightningError, ValueError):
    """A cache file exists but is not one this code wrote completely for this source and policy."""


def default_cache_dir() -> Path:
    """`$FER_LIGHTNING_CACHE`, else `~/.cache/fer_lightning` (outside the repo, shared by all runs)."""
    return Path(os.environ.get("FER_LIGHTNING_CACHE", Path.home() / ".cache" / "fer_lightning"))


def source_fingerprint(source: Path, policy: ReadPolicy = DEFAULT_POLICY) -> str:
    """Hash of what identifies the decode cheaply: every file's relative path, size and mtime, and the policy."""
    source = Path(source).resolve()
    digest = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}|{policy.cache_tag}|{source}".encode())
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(source.parent)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _cache_stem(source: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(source).resolve().name) or "source"


def cache_file(source: Path, cache_dir: Path, policy: ReadPolicy = DEFAULT_POLICY) -> Path:
    """`<name>-<location>-<policy>-<fingerprint>.npz`: one live file per source location and policy."""
    source = Path(source)
    location = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
    fingerprint = source_fingerprint(source, policy)[:20]
    return Path(cache_dir) / f"{_cache_stem(source)}-{location}-{policy.cache_tag}-{fingerprint}.npz"


def _checksum(arrays: FERArrays) -> str:
    digest = hashlib.sha256()
    for key in _ARRAY_KEYS:
        value = np.ascontiguousarray(getattr(arrays, key))
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _metadata(arrays: FERArrays, policy: ReadPolicy) -> str:
    return json.dumps({"format": CACHE_FORMAT_VERSION, "policy": policy.cache_tag, "count": len(arrays.images),
                       "sha256": _checksum(arrays), "problems": arrays.problems.to_json()})


def _save_atomic(arrays: FERArrays, target: Path, policy: ReadPolicy) -> None:
    """Write under a temporary name, fsync, then rename: readers see the old state or the complete new file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{socket.gethostname()}.{os.getpid()}.",
                                    suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, meta=np.array(_metadata(arrays, policy)),
                     **{key: getattr(arrays, key) for key in _ARRAY_KEYS})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)  # atomic; with two builders at once, the last complete file wins
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _load(target: Path, policy: ReadPolicy) -> FERArrays:
    """The cached arrays, or `CacheInvalidError` (or a load error) unless everything checks out."""
    loaded = np.load(target, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CacheInvalidError("not an .npz archive")
    with loaded as data:
        missing = [key for key in ("meta", *_ARRAY_KEYS) if key not in data.files]
        if missing:
            raise CacheInvalidError(f"missing {missing} (written by an older version?)")
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != CACHE_FORMAT_VERSION or meta.get("policy") != policy.cache_tag:
            raise CacheInvalidError(f"format {meta.get('format')} / policy {meta.get('policy')}, expected "
                                    f"{CACHE_FORMAT_VERSION} / {policy.cache_tag}")
        arrays = FERArrays(**{key: data[key] for key in _ARRAY_KEYS},
                           problems=ReadProblems.from_json(meta["problems"]))  # checks lengths, dtypes, ranges
    if len(arrays.images) != meta["count"] or arrays.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise CacheInvalidError(f"{arrays.images.shape} images, expected ({meta['count']}, 48, 48)")
    if _checksum(arrays) != meta["sha256"]:
        raise CacheInvalidError("checksum mismatch: the file was altered or damaged")
    return arrays


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_dead_temp_files(cache_dir: Path, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Delete temporary files left by builds that were killed, so they do not pile up (80 MB each for FER2013).

    A file is dead when its writer pid (in its name) no longer runs on this host, or, for files from other hosts
    on a shared disk and for reused pids, when it is older than `max_age_s`. Files of live writers, this process
    included (another thread may be writing), are kept.
    """
    removed = []
    host, now = socket.gethostname(), time.time()
    for path in Path(cache_dir).glob(".*.tmp"):
        parsed = _TMP_NAME.match(path.name)
        if parsed is None:
            continue  # not ours
        pid = int(parsed["pid"])
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue  # its writer just renamed it into place
        local = parsed["host"] == host
        # Only POSIX can probe a pid harmlessly (os.kill(pid, 0) terminates the process on Windows).
        writer_gone = local and os.name == "posix" and not _pid_alive(pid)
        if writer_gone or age > max_age_s:
            path.unlink(missing_ok=True)
            removed.append(path)
            log.info("Removed %s, left by a cache build that did not finish", path)
    return removed


def _remove_stale_caches(target: Path) -> None:
    """Older decodes of the same source location and policy, and caches in the format-1 naming."""
    stem, location, tag, _ = target.name.rsplit("-", 3)
    current = re.compile(rf"^{re.escape(stem)}-{location}-{tag}-[0-9a-f]{{20}}\.npz$")
    legacy = re.compile(rf"^{re.escape(stem)}-[0-9a-f]{{20}}\.npz$")
    for path in target.parent.glob(f"{stem}-*.npz"):
        if path != target and (current.match(path.name) or legacy.match(path.name)):
            path.unlink(missing_ok=True)
            log.info("Removed stale cache %s (its source changed, or an older format)", path)


def load_or_build(source: Path, cache_dir: Path | None, build: Callable[[], FERArrays],
                  policy: ReadPolicy = DEFAULT_POLICY) -> FERArrays:
    """Return the cached arrays for `source` read under `policy`, decoding with `build` only when needed.

    `cache_dir=None` disables caching (decode every time), which tests and read-only machines may want. Failing
    to write the cache is a warning, not an error: the decoded arrays are still good for this run. A `build` that
    raises (a source with unusable items under `data.bad_images=error`) writes nothing: a cache only ever holds
    a decode its policy accepted.
    """
    if cache_dir is None:
        return build()
    cache_dir = Path(cache_dir)
    target = cache_file(source, cache_dir, policy)
    if cache_dir.is_dir():
        remove_dead_temp_files(cache_dir)
    if target.exists():
        try:
            arrays = _load(target, policy)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # CacheInvalidError too
            log.warning("Cache %s is unusable (%s: %s); decoding the source again", target, type(err).__name__, err)
        else:
            log.info("Loaded decoded FER2013 from cache %s", target)
            arrays.problems.log_warnings(source)
            return arrays
    arrays = build()
    try:
        _save_atomic(arrays, target, policy)
    except OSError as err:
        log.warning("Could not write the decode cache %s (%s); continuing without it", target, err)
        return arrays
    _remove_stale_caches(target)
    log.info("Decoded %d images from %s; cached at %s", len(arrays.images), source, target)
    return arrays
