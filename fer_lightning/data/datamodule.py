"""LightningDataModules: real FER2013 from any of its forms, and the built-in synthetic faces.

Both share one base so splits, class counts, imbalance handling and loaders behave identically; only where
the uint8 arrays come from differs.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, WeightedRandomSampler

from fer_lightning.data.cache import default_cache_dir, load_or_build
from fer_lightning.data.dataset import FERDataset, TrainDataLoader, Transform, seed_worker_augmentations
from fer_lightning.data.download import download_fer2013, resolve_source
from fer_lightning.data.readers import DEFAULT_POLICY, FERArrays, ReadPolicy, ReadProblems, read_source
from fer_lightning.data.synthetic import make_synthetic_faces
from fer_lightning.errors import FERLightningError
from fer_lightning.labels import EMOTIONS, NUM_CLASSES, SPLIT_NAMES, TEST, TRAIN, VAL

log = logging.getLogger(__name__)

# Up to this many usable cores, `data.num_workers: auto` loads in the training process (see `auto_num_workers`).
AUTO_WORKERS_MAX_SERIAL_CORES = 4
AUTO_WORKERS_CAP = 8


class DataConfigError(FERLightningError, ValueError):
    """A `data.*` setting the datamodule cannot use; the message names the key and the accepted values."""


def usable_cores() -> int:
    """Cores this process may run on: the affinity mask (what taskset, cgroups cpusets and SLURM grant), not the
    machine's count, which overstates a job's share on a shared node. `os.cpu_count()` where there is no mask."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def auto_num_workers(cores: int | None = None) -> int:
    """Loader worker processes for `data.num_workers: auto`: 0 on up to 4 usable cores, else half, at most 8.

    A worker does the same decode-and-augment work the training process would (a little more: batches are pickled
    between processes), so it only pays where a core would otherwise sit idle. On a CPU run torch's threads keep a
    few cores busy with the convolutions and there is no idle core: on the 2-vCPU development machine workers never
    made training faster (cpu_budget: 1,074 images/s with 0 workers, 949 with 2; compact_cnn: 0, 1 and 2 workers
    within noise; experiments/num_workers/README.md), and they cost memory and a start-up every epoch
    (`persistent_workers` is off for exact resume). 4 cores is a judgement, not a measurement: one worker would
    still be a quarter of the machine. With more cores the small convolutions stop scaling, or run on a GPU, so
    parallel loading overlaps the model's step; half the cores leaves the rest to the training process, and 8
    workers (~4k augmented faces/s each) feed a GPU without a process per core.
    """
    cores = usable_cores() if cores is None else cores
    if cores <= AUTO_WORKERS_MAX_SERIAL_CORES:
        return 0
    return min(AUTO_WORKERS_CAP, cores // 2)


def resolve_num_workers(value: int | str) -> int:
    """`data.num_workers` as the DataLoader needs it: an int as given, `auto` through `auto_num_workers`.

    Resolved once, when the datamodule is built, so a bad value fails before any data is read and the run
    records the number it actually used (`describe()["num_workers"]`, in metrics.json).
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return auto_num_workers()
        if text.isdigit():  # `data.num_workers="2"`, or an environment variable interpolated into the config
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise DataConfigError(f"data.num_workers={value!r} is not allowed; give a whole number >= 0 (0: load in the "
                          "training process) or auto (0 on up to 4 cores, else half the cores, at most 8)")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def stratified_val_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation samples: the same fraction of every class, reproducible from the seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = int(round(fraction * len(members)))
        mask[rng.permutation(members)[:take]] = True
    return mask


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of `fraction` of every class (at least one face each), reproducible from the seed.

    For data-efficiency curves (`data.train_fraction`): a smaller training set with FER2013's class balance, so a
    curve measures how much data a method needs, not how it copes with a different imbalance. Subsets of one seed
    are nested: the first 5% of each class's shuffled order is inside the first 10%, so a curve adds data.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataConfigError(f"data.train_fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = max(1, int(round(fraction * len(members))))
        keep.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """Evaluation order of a split: every prefix holds the split's classes in (nearly) their proportions.

    Sources list faces class by class (FER2013's folders, PrivateTest included), so `trainer.limit_val_batches`
    or `limit_test_batches` would otherwise score a few classes only. Each class's faces, shuffled from the seed,
    are spread evenly over [0, 1) (the k-th of n at (k + 0.5) / n) and all faces are merged by that position,
    a proportional round-robin: any prefix holds within about one face of its share of every class. Metrics over
    the whole split do not depend on the order (the mean loss only in float rounding).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    positions = np.empty(len(labels), dtype=np.float64)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        positions[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((labels, positions))  # by position, ties (equal class sizes) in class order


class FERDataModule(LightningDataModule):
    """Shared machinery; subclasses implement `load_arrays` (and may override `prepare_data`)."""

    name = "fer"
    is_synthetic = False
    official_val_source = "official (PublicTest)"  # how `val_source` reads when the source has its own val split

    def __init__(
        self,
        train_transform: Transform,
        eval_transform: Transform,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool = False,
        persistent_workers: bool = False,
        weighted_sampling: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        train_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers_setting = num_workers  # as configured, e.g. "auto"
        self.num_workers: int = resolve_num_workers(num_workers)  # what the loaders use
        if num_workers != self.num_workers:
            log.info("data.num_workers=%s: %d loader worker(s) on %d usable core(s)", num_workers, self.num_workers,
                     usable_cores())
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.weighted_sampling = weighted_sampling
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        # At construction: a typo fails before any data is read. A word or a bool (`data.train_fraction=half`,
        # `=true`) is refused naming the key too, not as float()'s ValueError nor as a silent 1.0.
        numeric = isinstance(train_fraction, (numbers.Real, str)) and not isinstance(train_fraction, bool)
        try:
            fraction = float(train_fraction) if numeric else math.nan
        except ValueError:
            fraction = math.nan
        if not 0.0 < fraction <= 1.0:
            raise DataConfigError(f"data.train_fraction must be in (0, 1] (1 = the whole training split), got "
                                  f"{train_fraction!r}")
        self.train_fraction = fraction
        self.train_total = 0  # faces in the training split before `train_fraction`, set by `setup`
        self.class_names: tuple[str, ...] = EMOTIONS
        self.num_classes: int = NUM_CLASSES
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.val_source: str = ""
        self._arrays: FERArrays | None = None  # held only between prepare_data and setup
        self._eval_orders: dict[str, np.ndarray] = {}  # split -> stratified_order, computed once per split
        self.read_problems = ReadProblems()  # what the reader skipped or altered; set by `setup`, in `describe`

    def load_arrays(self) -> FERArrays:
        raise NotImplementedError

    def prepare_data(self) -> None:
        # Decode (and fill the cache) on one process; Lightning calls this before every fit/validate/test,
        # so the loaded arrays are kept for `setup` and nothing is read twice.
        if not self.splits and self._arrays is None:
            self._arrays = self.load_arrays()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self._arrays if self._arrays is not None else self.load_arrays()
        self._arrays = None
        self.read_problems = arrays.problems
        train = arrays.splits == TRAIN
        if arrays.has_official_val:
            val = arrays.splits == VAL
            self.val_source = self.official_val_source
        else:
            carved = stratified_val_split(arrays.labels[train], self.val_fraction, self.split_seed)
            val = np.zeros_like(train)
            val[np.flatnonzero(train)[carved]] = True
            train = train & ~val
            self.val_source = (
                f"stratified {self.val_fraction:.0%} of train (seed {self.split_seed}): the source has no "
                "PublicTest split"
            )
            log.warning("Validation split: %s", self.val_source)
        test = arrays.splits == TEST
        for name, mask in zip(SPLIT_NAMES, (train, val, test)):
            self.splits[name] = (arrays.images[mask], arrays.labels[mask])
        images, labels = self.splits["train"]
        self.train_total = len(labels)
        if self.train_fraction < 1.0:  # after the val split is carved: val and test never shrink
            keep = stratified_subset(labels, self.train_fraction, self.split_seed)
            self.splits["train"] = (images[keep], labels[keep])
            log.info("data.train_fraction=%g: training on %d of %d faces (stratified, seed %d)", self.train_fraction,
                     len(keep), len(labels), self.split_seed)
        for name, counts in self.class_counts.items():
            table = ", ".join(f"{cls}={n}" for cls, n in zip(self.class_names, counts))
            log.info("%s %s: %d images (%s)", self.name, name, sum(counts), table)

    @property
    def class_counts(self) -> dict[str, list[int]]:
        """Images per class per split (after any carved validation split), in `EMOTIONS` order."""
        return {
            name: np.bincount(labels, minlength=self.num_classes).tolist()
            for name, (_, labels) in self.splits.items()
        }

    def class_weights(self) -> torch.Tensor:
        """'Balanced' weights n / (k * n_c) from the training split, for a class-weighted loss."""
        counts = torch.tensor(self.class_counts["train"], dtype=torch.float)
        return counts.sum() / (len(counts) * counts.clamp(min=1))

    def _dataset(self, split: str, transform: Transform) -> FERDataset:
        if not self.splits:
            raise RuntimeError("call setup() before asking for data loaders")
        images, labels = self.splits[split]
        return FERDataset(images, labels, transform)

    def _loader(self, dataset: FERDataset, train: bool, sampler=None) -> DataLoader:
        # Training loaders reseed the augmentation every epoch (and in every worker) from the run's generator.
        loader_class, extra = (TrainDataLoader, {"worker_init_fn": seed_worker_augmentations}) if train else (
            DataLoader, {})
        return loader_class(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,  # torch refuses it with 0
            drop_last=False,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train", self.train_transform)
        sampler = None
        if self.weighted_sampling:
            per_class = self.class_weights()
            sampler = WeightedRandomSampler(per_class[dataset.labels], num_samples=len(dataset), replacement=True)
        return self._loader(dataset, train=True, sampler=sampler)

    def eval_order(self, split: str) -> np.ndarray:
        """Indices into `splits[split]` in the order the val/test loaders yield them (see `stratified_order`): what
        maps a face's position in an evaluation batch back to the split, whose source order nothing else changes."""
        if split not in self._eval_orders:
            if not self.splits:
                raise RuntimeError("call setup() before asking for data loaders")
            self._eval_orders[split] = stratified_order(self.splits[split][1], self.split_seed)
        return self._eval_orders[split]

    def _eval_loader(self, split: str) -> DataLoader:
        order = self.eval_order(split)
        images, labels = self.splits[split]
        # The dataset itself is reordered, before any sharding: under DDP every rank takes every world_size-th
        # face of the stratified order, so each rank's first batches (what `limit_*_batches` counts, per rank)
        # mix the classes too. `splits` keeps the source order for everything else.
        dataset = FERDataset(images[order], labels[order], self.eval_transform)
        # Under DDP, Lightning's DistributedSampler pads the split with repeated images so every process gets
        # as many; that would count some PublicTest/PrivateTest faces twice. Each face is seen exactly once here,
        # so synced metrics equal a single process's.
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False) if _distributed() else None
        return self._loader(dataset, train=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def describe(self) -> dict:
        """What a run records about its data in metrics.json and the loggers."""
        return {
            "dataset": self.name,
            "synthetic": self.is_synthetic,
            "val_split": self.val_source,
            "class_names": list(self.class_names),
            "class_counts": self.class_counts,
            "data_problems": self.read_problems.summary(),  # all zero unless data.bad_images/color/wrong_size acted
            "train_fraction": self.train_fraction,  # < 1: a stratified subset of train (data-efficiency curves)
            "train_images": sum(self.class_counts.get("train", [])),
            "num_workers": self.num_workers,  # resolved: `auto` is recorded as the number it chose on this machine
            "source": self.source_description(),  # what the report groups runs by: never averages across data
            "eval_order": f"class-stratified, seed {self.split_seed}",  # so a cut-down evaluation still mixes classes
        }

    def source_description(self) -> str:
        """Which data, precisely enough that runs on different data never share a report row."""
        return self.name


class FER2013DataModule(FERDataModule):
    """FER2013 from a folder, a .zip or a .csv; Training/PublicTest/PrivateTest -> train/val/test."""

    name = "fer2013"

    def __init__(
        self,
        root: str,
        train_transform: Transform,
        eval_transform: Transform,
        download: bool = False,
        cache: bool = True,
        cache_dir: str | None = None,
        bad_images: str = "error",
        wrong_size: str = "error",
        color: str = "convert",
        **kwargs,
    ) -> None:
        super().__init__(train_transform, eval_transform, **kwargs)
        self.root = root
        self.download = download
        self.cache_dir = (Path(cache_dir) if cache_dir else default_cache_dir()) if cache else None
        # Validated here, before any data is touched: a typo in data.bad_images fails at start-up.
        self.read_policy = ReadPolicy(bad_images=bad_images, wrong_size=wrong_size, color=color)
        self.resolved_source: Path | None = None  # set by `load_arrays`: the file or folder actually read

    def source(self) -> Path:
        root = download_fer2013() if self.download and not Path(self.root).expanduser().exists() else self.root
        return resolve_source(root)

    def load_arrays(self) -> FERArrays:
        source = self.source()
        self.resolved_source = source.resolve()
        return load_fer2013(source, self.cache_dir, self.read_policy, cache=self.cache_dir is not None)

    def source_description(self) -> str:
        # The absolute path of the file or folder read: two copies of FER2013 (or a cleaned one) stay apart
        return str(self.resolved_source or Path(self.root).expanduser())


class SyntheticFERDataModule(FERDataModule):
    """Procedurally drawn faces (see `synthetic.py`): the demo and the tests run without downloading data.

    Everything a synthetic run writes says `synthetic` (run dir, metrics.json, logger tags), so its numbers
    are never mistaken for FER2013 results.
    """

    name = "synthetic"
    is_synthetic = True
    official_val_source = "generated (a separately seeded set of synthetic faces)"

    def __init__(
        self,
        train_transform: Transform,
        eval_transform: Transform,
        num_train: int = 3000,
        num_val: int = 600,
        num_test: int = 600,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(train_transform, eval_transform, **kwargs)
        self.sizes = {TRAIN: num_train, VAL: num_val, TEST: num_test}
        self.seed = seed

    def source_description(self) -> str:
        return (f"synthetic (seed {self.seed}, {self.sizes[TRAIN]}/{self.sizes[VAL]}/{self.sizes[TEST]} "
                "train/val/test faces)")

    def load_arrays(self) -> FERArrays:
        images, labels, splits = [], [], []
        for code, count in self.sizes.items():
            x, y = make_synthetic_faces(count, seed=self.seed * 10 + code)
            images.append(x)
            labels.append(y)
            splits.append(np.full(count, code, dtype=np.uint8))
        splits_all = np.concatenate(splits)
        return FERArrays(
            images=np.concatenate(images),
            labels=np.concatenate(labels),
            splits=splits_all,
            names=np.array([f"synthetic:{SPLIT_NAMES[c]}:{i}" for i, c in enumerate(splits_all)]),
        )


def load_fer2013(root: str | Path, cache_dir: Path | None = None, policy: ReadPolicy = DEFAULT_POLICY, *,
                 cache: bool = True) -> FERArrays:
    """Decoded FER2013 from any of its forms (folder, zip, CSV), through the decode cache.

    For scripts and tests that need the faces but no DataLoader; ``cache_dir=None`` uses the default cache and
    ``cache=False`` decodes without one (``data.cache=false``). ``policy`` is what ``data.bad_images``,
    ``data.wrong_size`` and ``data.color`` set; the default stops on any unusable image.
    """
    source = resolve_source(root)
    directory = (cache_dir or default_cache_dir()) if cache else None
    return load_or_build(source, directory, lambda: read_source(source, policy), policy=policy)
