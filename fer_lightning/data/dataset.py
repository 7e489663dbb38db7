"""In-memory dataset: uint8 arrays in, augmented float tensors out; augmentation randomness seeded from torch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from fer_lightning.preprocessing import Transform, prepare_face


def to_model_input(image: np.ndarray, transform: Transform) -> torch.Tensor:
    """Apply an albumentations pipeline to one uint8 HxW face and return a (1, H, W) float tensor.

    Training, evaluation and inference all go through :func:`fer_lightning.preprocessing.prepare_face`, so the
    classifier always sees a face prepared the same way.
    """
    return torch.from_numpy(prepare_face(image, transform))


class FERDataset(Dataset):
    """Faces stay uint8 in memory (48*48 bytes each); augmentation runs per sample in the loader workers."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Transform) -> None:
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_model_input(self.images[index], self.transform), self.labels[index]

    def reseed(self, seed: int) -> None:
        """Seed the augmentation pipeline.

        albumentations' `Compose` keeps its own generator, seeded from OS entropy and deaf to
        `seed_everything`, and every loader worker receives an identical pickled copy of it. Reseeding from
        torch's global generator per epoch (and per worker and rank) makes augmentation reproducible from the
        run's seed, distinct across workers, and restorable on resume.
        """
        set_random_seed = getattr(self.transform, "set_random_seed", None)
        if set_random_seed is not None:
            set_random_seed(int(seed))


def _rank() -> int:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_rank() if distributed else 0


def _mix_seed(*parts: int) -> int:
    """A 32-bit seed from several integers without collisions between neighbours (epoch/worker/rank)."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])


def seed_worker_augmentations(worker_id: int) -> None:
    """`worker_init_fn`: torch gives each worker `base_seed + worker_id`, with base_seed drawn per epoch from
    the main process's generator; the rank is mixed in so DDP processes do not augment in lockstep."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, FERDataset):
        info.dataset.reseed(_mix_seed(info.seed, _rank()))
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)  # numpy/random in the worker, as seed_everything(workers=True) would


class TrainDataLoader(DataLoader):
    """A DataLoader whose in-process iteration (num_workers=0) also reseeds the augmentation each epoch.

    The seed is drawn from torch's global generator when the epoch's iterator is created, which is the state
    a checkpoint restores, so a resumed run augments exactly as an uninterrupted one.
    """

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0 and isinstance(self.dataset, FERDataset):
            self.dataset.reseed(_mix_seed(int(torch.randint(0, 2**62, (1,)).item()), _rank()))
        return super().__iter__()
