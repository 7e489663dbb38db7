"""Mixup and CutMix on a training batch (per batch, on the normalised tensors, as timm's `Mixup` does).

Mixup (Zhang et al. 2018) blends two faces; CutMix (Yun et al. 2019) pastes a box of one face into another. Both
train on soft targets lam * y_a + (1 - lam) * y_b, which regularises the over-confident fits that a small,
noisy-labelled set like FER2013 invites. Randomness comes from torch's global generator, so `seed` reproduces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class MixedBatch:
    """A mixed batch: train on `x` with loss lam * CE(y_a) + (1 - lam) * CE(y_b)."""

    x: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float  # the share of y_a; for CutMix, corrected to the pasted box's true area
    mode: str  # "mixup" or "cutmix"
    box: tuple[int, int, int, int] | None = None  # CutMix: (top, bottom, left, right) rows/cols taken from y_b

    @property
    def dominant(self) -> torch.Tensor:
        """The label that holds most of each mixed image (y_a when lam >= 0.5)."""
        return self.y_a if self.lam >= 0.5 else self.y_b


def sample_lam(alpha: float) -> float:
    """lam ~ Beta(alpha, alpha), the mixing coefficient of both papers."""
    return float(torch.distributions.Beta(alpha, alpha).sample())


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box covering about (1 - lam) of the image, centred uniformly at random and clipped to the image."""
    cut = math.sqrt(1.0 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ()).item()), int(torch.randint(width, ()).item())
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    return top, bottom, left, right


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> MixedBatch:
    return MixedBatch(lam * x + (1.0 - lam) * x[perm], y, y[perm], lam, "mixup")


def cutmix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> MixedBatch:
    """Paste a box of the permuted batch; lam becomes the exact share of pixels left from `x` (after clipping)."""
    height, width = x.shape[-2:]
    top, bottom, left, right = cutmix_box(height, width, lam)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
    return MixedBatch(mixed, y, y[perm], lam, "cutmix", (top, bottom, left, right))


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
              mix_prob: float = 1.0) -> MixedBatch | None:
    """Mixup or CutMix with probability `mix_prob`, else None (train on the batch as it is).

    With both alphas > 0 one of the two is picked per batch with equal odds (timm's `switch_prob=0.5`).
    """
    if mixup_alpha < 0 or cutmix_alpha < 0 or not 0.0 <= mix_prob <= 1.0:
        raise ValueError(f"need alphas >= 0 and mix_prob in [0, 1], got {mixup_alpha}, {cutmix_alpha}, {mix_prob}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return None
    if mix_prob < 1.0 and float(torch.rand(())) >= mix_prob:
        return None
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or float(torch.rand(())) < 0.5)
    lam = sample_lam(cutmix_alpha if use_cutmix else mixup_alpha)
    perm = torch.randperm(len(y), device=y.device)
    return cutmix(x, y, lam, perm) if use_cutmix else mixup(x, y, lam, perm)
