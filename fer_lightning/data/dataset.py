"""In-memory dataset: uint8 arrays in, augmented float tensors out."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

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
