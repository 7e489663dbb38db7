"""The decode cache: trusted only when complete and made for this source and reader policy (issue 6)."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from conftest import TinyFER, copy_tree

from fer_lightning.data import cache
from fer_lightning.data.cache import cache_file, load_or_build, remove_dead_temp_files
from fer_lightning.data.datamodule import FER2013DataModule
from fer_lightning.data.readers import DEFAULT_POLICY, FER2013FormatError, FERArrays, ReadPolicy, read_source

REPO = Path(__file__).resolve().parents[1]
SKIP = ReadPolicy(bad_images="skip")

# Builds the cache of argv[1] in argv[2], but its np.savez writes half the archive, flushes, says so and hangs:
# the parent kills it there, as a user's Ctrl-\ or the OOM killer would mid-write.
KILLED_BUILDER = """
import io, sys, time
from pathlib import Path
import numpy as np
from fer_lightning.data.cache import load_or_build
from fer_lightning.data.readers import read_source

real_savez = np.savez

def savez_half_then_hang(file, **arrays):
    buffer = io.BytesIO()
    real_savez(buffer, **arrays)
    file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    file.flush()
    print("HALF-WRITTEN", flush=True)
    time.sleep(600)

np.savez = savez_half_then_hang
source, cache_dir = Path(sys.argv[1]), Path(sys.argv[2])
load_or_build(source, cache_dir, lambda: read_source(source))
"""


def _assert_same(a: FERArrays, b: FERArrays) -> None:
    for key in ("images", "labels", "splits", "names"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert a.problems == b.problems


class Builds:
    """A `build` callable that counts its calls, so tests see whether the cache was trusted."""

    def __init__(self, source: Path, policy: ReadPolicy = DEFAULT_POLICY) -> None:
        self.source, self.policy, self.calls = source, policy, 0

    def __call__(self) -> FERArrays:
        self.calls += 1
        return read_source(self.source, self.policy)


def _wait_for_line(process: subprocess.Popen, expected: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            if line.strip() == expected:
                return
            if not line:  # the child exited before writing: show why
                raise AssertionError(f"builder exited early: {process.stderr.read()}")
    raise AssertionError(f"no '{expected}' from the builder within {timeout_s} s")


def test_killed_cache_build_leaves_nothing_trusted_and_is_cleaned_up(tiny_fer: TinyFER, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache_dir"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILDER, str(tiny_fer.zip), str(cache_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        _wait_for_line(child, "HALF-WRITTEN")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        child.stderr.close()
    leftovers = list(cache_dir.glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the build really was cut off mid-write
    assert f".{socket.gethostname()}.{child.pid}." in leftovers[0].name
    assert [p.name for p in cache_dir.iterdir()] == [leftovers[0].name]  # nothing under a name a run would load

    builds = Builds(tiny_fer.zip)
    arrays = load_or_build(tiny_fer.zip, cache_dir, builds)
    assert builds.calls == 1
    _assert_same(arrays, read_source(tiny_fer.zip))
    assert not leftovers[0].exists()  # the dead build's temp file is removed
    assert [p.name for p in cache_dir.iterdir()] == [cache_file(tiny_fer.zip, cache_dir).name]
    _assert_same(load_or_build(tiny_fer.zip, cache_dir, builds), arrays)
    assert builds.calls == 1  # and the rebuilt cache is trusted


def _damage_truncated(target: Path) -> None:
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


def _damage_garbage(target: Path) -> None:
    target.write_bytes(b"garbage")


def _damage_an_npy(target: Path) -> None:
    with target.open("wb") as handle:
        np.save(handle, np.zeros(3))


def _damage_tampered(target: Path) -> None:
    """A well-formed npz whose images changed after writing: np.load succeeds, only the checksum catches it."""
    with np.load(target, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0] ^= 1
    with target.open("wb") as handle:
        np.savez(handle, **arrays)


def _damage_short(target: Path) -> None:
    """Consistent arrays, but fewer than the file says it holds (e.g. written by a buggy writer)."""
    with np.load(target, allow_pickle=False) as data:
        arrays = {key: data[key][:-1] if key != "meta" else data[key] for key in data.files}
    with target.open("wb") as handle:
        np.savez(handle, **arrays)


def _rewrite_meta(target: Path, **changes: object) -> None:
    with np.load(target, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["meta"] = np.array(json.dumps({**json.loads(str(arrays["meta"])), **changes}))
    with target.open("wb") as handle:
        np.savez(handle, **arrays)


def _damage_other_version(target: Path) -> None:
    """Intact, but written by another cache format: its arrays may mean something else."""
    _rewrite_meta(target, format=cache.CACHE_FORMAT_VERSION + 1)


def _damage_other_policy(target: Path) -> None:
    """Intact, but decoded under another reader policy (e.g. a copied or renamed file)."""
    _rewrite_meta(target, policy="see")


def _damage_old_format(target: Path) -> None:
    with np.load(target, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files if key != "meta"}
    with target.open("wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize("damage", [_damage_truncated, _damage_garbage, _damage_an_npy, _damage_tampered,
                                    _damage_short, _damage_old_format, _damage_other_version,
                                    _damage_other_policy], ids=lambda f: f.__name__[8:])
def test_damaged_cache_is_detected_warned_about_and_rebuilt(tiny_fer: TinyFER, tmp_path: Path, damage,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cache_dir, builds = tmp_path / "cache_dir", Builds(tiny_fer.zip)
    first = load_or_build(tiny_fer.zip, cache_dir, builds)
    target = cache_file(tiny_fer.zip, cache_dir)
    damage(target)
    with caplog.at_level(logging.WARNING, logger="fer_lightning.data.cache"):
        again = load_or_build(tiny_fer.zip, cache_dir, builds)
    assert builds.calls == 2
    assert f"Cache {target} is unusable" in caplog.text
    _assert_same(again, first)
    load_or_build(tiny_fer.zip, cache_dir, builds)
    assert builds.calls == 2  # the rewritten cache is good again


def test_reader_policy_is_part_of_the_cache_key(tiny_fer: TinyFER, tmp_path: Path) -> None:
    victim = sorted((tiny_fer.folder / "train" / "happy").glob("*.png"))[0]
    victim.write_bytes(b"")
    cache_dir = tmp_path / "cache_dir"
    skipping = Builds(tiny_fer.folder, SKIP)
    assert len(load_or_build(tiny_fer.folder, cache_dir, skipping, SKIP).problems.skipped) == 1
    strict = Builds(tiny_fer.folder)
    with pytest.raises(FER2013FormatError, match=victim.name):  # the skip-mode decode is not reused
        load_or_build(tiny_fer.folder, cache_dir, strict)
    assert strict.calls == 1
    load_or_build(tiny_fer.folder, cache_dir, skipping, SKIP)
    assert skipping.calls == 1  # ... and the skip-mode cache is still there for skip-mode runs
    assert cache_file(tiny_fer.folder, cache_dir) != cache_file(tiny_fer.folder, cache_dir, SKIP)


def test_problems_are_stored_with_the_cache(tiny_fer: TinyFER, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    victim = sorted((tiny_fer.folder / "test" / "sad").glob("*.png"))[0]
    victim.write_bytes(b"not an image")
    builds = Builds(tiny_fer.folder, SKIP)
    built = load_or_build(tiny_fer.folder, tmp_path / "c", builds, SKIP)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cached = load_or_build(tiny_fer.folder, tmp_path / "c", builds, SKIP)
    assert builds.calls == 1
    _assert_same(cached, built)
    assert cached.problems.skipped_counts() == {"corrupt": 1}
    assert "skipped 1 unusable item(s)" in caplog.text and victim.name in caplog.text  # said again on every run


def test_dead_temp_files_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    host = socket.gethostname()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # a pid that has exited and been reaped
    names = {
        "dead_writer": f".fer-x-eec-0.npz.{host}.{finished.pid}.abc123.tmp",
        "this_process": f".fer-x-eec-0.npz.{host}.{os.getpid()}.abc123.tmp",
        "live_writer": f".fer-x-eec-0.npz.{host}.{os.getppid()}.abc123.tmp",
        "other_host_recent": f".fer-x-eec-0.npz.elsewhere.{finished.pid}.abc123.tmp",
        "other_host_old": f".fer-x-eec-0.npz.elsewhere.{os.getpid()}.abc123.tmp",
        "live_but_old": f".fer-x-eec-1.npz.{host}.{os.getppid()}.abc123.tmp",
        "not_ours": ".notes.tmp",
    }
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x")
        if key.endswith("old"):
            old = time.time() - cache.STALE_TMP_AGE_S - 60
            os.utime(tmp_path / name, (old, old))
    removed = {path.name for path in remove_dead_temp_files(tmp_path)}
    assert removed == {names["dead_writer"], names["other_host_old"], names["live_but_old"]}
    assert {p.name for p in tmp_path.iterdir()} == set(names.values()) - removed


def test_two_builders_at_once_leave_one_valid_cache(tiny_fer: TinyFER, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Both decode, both write their own temp file, both rename: the last complete file wins, none is torn."""
    cache_dir, both_building = tmp_path / "cache_dir", threading.Barrier(2, timeout=30)
    results: list[FERArrays] = []

    def build() -> FERArrays:
        both_building.wait()  # neither finds a cache: both build and write at the same time
        return read_source(tiny_fer.zip)

    def run() -> None:
        results.append(load_or_build(tiny_fer.zip, cache_dir, build))

    with caplog.at_level(logging.WARNING):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert len(results) == 2 and "Could not write" not in caplog.text
    assert [p.name for p in cache_dir.iterdir()] == [cache_file(tiny_fer.zip, cache_dir).name]  # no .tmp left
    builds = Builds(tiny_fer.zip)
    _assert_same(load_or_build(tiny_fer.zip, cache_dir, builds), results[0])
    assert builds.calls == 0


def test_an_unwritable_cache_is_a_warning_not_a_failure(tiny_fer: TinyFER, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("in the way")
    with caplog.at_level(logging.WARNING):
        arrays = load_or_build(tiny_fer.zip, not_a_dir / "cache", Builds(tiny_fer.zip))
    assert len(arrays.images) == 7 * 8 and "Could not write the decode cache" in caplog.text


def test_stale_caches_go_but_other_sources_with_the_same_name_stay(tiny_fer: TinyFER, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache_dir"
    twin = copy_tree(tiny_fer.folder, tmp_path / "elsewhere" / "fer_folder")  # same folder name, other place
    legacy = cache_dir / "fer_folder-0123456789abcdef0123.npz"  # a format-1 cache: never valid again
    cache_dir.mkdir()
    legacy.write_bytes(b"old")
    load_or_build(tiny_fer.folder, cache_dir, Builds(tiny_fer.folder))
    load_or_build(twin, cache_dir, Builds(twin))
    assert not legacy.exists()
    assert len(list(cache_dir.glob("*.npz"))) == 2
    victim = sorted((twin / "train" / "angry").glob("*.png"))[0]  # touched: a new fingerprint for the twin
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    load_or_build(twin, cache_dir, Builds(twin))
    assert sorted(p.name for p in cache_dir.glob("*.npz")) == sorted(
        [cache_file(tiny_fer.folder, cache_dir).name, cache_file(twin, cache_dir).name])


def test_cache_false_writes_no_cache(tiny_fer: TinyFER, tmp_path: Path) -> None:
    transform = A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])
    dm = FER2013DataModule(root=str(tiny_fer.zip), train_transform=transform, eval_transform=transform,
                           num_workers=0, cache=False)
    dm.setup("fit")
    default_cache = Path(os.environ["FER_LIGHTNING_CACHE"])  # conftest points it into tmp_path
    assert not default_cache.exists() or not any(default_cache.iterdir())

