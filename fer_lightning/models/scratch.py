"""Networks trained from scratch on 48x48 faces."""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(c_in: int, c_out: int, kernel: int, dropout: float, double: int | None = None) -> list[nn.Module]:
    layers: list[nn.Module] = []
    if double is not None:  # the seed's first block stacks two convs before its batch norm
        layers += [nn.Conv2d(c_in, double, kernel, padding="same"), nn.ReLU(inplace=True)]
        c_in = double
    layers += [
        nn.Conv2d(c_in, c_out, kernel, padding="same"),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(c_out),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
    ]
    return layers


class SeedCNN(nn.Module):
    """The seed project's Keras CNN, rebuilt layer for layer as the baseline to beat.

    Keras original: Conv(32,3)-Conv(64,3)-BN-Pool-Drop | Conv(128,5)-BN-Pool-Drop | Conv(512,3, l2=0.01)-BN-
    Pool-Drop | Conv(512,3, l2=0.01)-BN-Pool-Drop | Flatten-Dense(256)-BN-Drop-Dense(512)-BN-Drop-Dense(7).
    Keras puts BN after the ReLU, and so does this. The kernel L2 penalty of the two 512 convs is kept as
    `regularization_loss()` (Keras adds 0.01 * sum(w^2) to the loss); the LightningModule adds it.
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, drop_rate: float = 0.25,
                 input_size: int = 48, l2: float = 0.01) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(in_chans, 64, 3, drop_rate, double=32),
            *_conv_block(64, 128, 5, drop_rate),
            *_conv_block(128, 512, 3, drop_rate),
            *_conv_block(512, 512, 3, drop_rate),
        )
        self.l2 = l2
        spatial = input_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * spatial * spatial, 256),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(256),
            nn.Dropout(drop_rate),
            nn.Linear(256, 512),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(512),
            nn.Dropout(drop_rate),
            nn.Linear(512, num_classes),
        )

    def get_classifier(self) -> nn.Module:
        """The dense head, timm-style, so fine-tuning strategies treat every network alike."""
        return self.classifier

    def regularization_loss(self) -> torch.Tensor:
        convs_512 = (m for m in self.features if isinstance(m, nn.Conv2d) and m.out_channels == 512)
        return self.l2 * sum(conv.weight.pow(2).sum() for conv in convs_512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CompactCNN(nn.Module):
    """A small VGG-style net (about 0.2M parameters) that trains at hundreds of faces/s on a 2-core CPU.

    Stages of 3x3 conv-BN-ReLU layers with max-pooling, then global average pooling, so it accepts any input
    size (48x48 faces or 40-44 px crops). The full-resolution stage has a single narrow conv because on a CPU
    that stage costs the most. Used by the demo, the tests, and CPU-budget experiments.
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, drop_rate: float = 0.2, input_size: int = 48,
                 widths: tuple[int, ...] = (16, 32, 64, 128), depths: tuple[int, ...] = (1, 2, 2, 2)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_chans
        for width, depth in zip(widths, depths, strict=True):
            for _ in range(depth):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate),
                                  nn.Linear(c_in, num_classes))

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class VGGFER(nn.Module):
    """The VGG variant that holds the best single-network FER2013 result trained from scratch (73.28%).

    Khaireddin & Chen, "Facial Emotion Recognition: State of the Art Performance on FER2013" (arXiv 2105.03588,
    code: github.com/usef-kh/fer): four stages of two 3x3 conv-BN-ReLU layers (64, 128, 256, 512 channels), each
    followed by 2x2 max-pooling, then two 4096-unit dense layers with dropout. The flatten size is computed from
    `input_size` (floor(size / 16) per side) so the 40 px crops of the paper, 44 px crops and whole 48 px faces
    all work; the spatial layout is kept rather than pooled away, as in the paper.

    Parameters: about 4.7M in the convolutions, plus 2048x4096 + 4096x4096 dense weights (25M) at 40-44 px, or
    4608x4096 + 4096x4096 (35.7M) at 48 px: 30M / 40M in total. `hidden` shrinks the head (1024: 7.8M at 40 px).
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, drop_rate: float = 0.2, input_size: int = 40,
                 widths: tuple[int, ...] = (64, 128, 256, 512), hidden: int = 4096) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"vgg_fer pools four times by 2 and needs input_size >= 16, got {input_size}")
        layers: list[nn.Module] = []
        c_in = in_chans
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        spatial = input_size // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * spatial * spatial, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),
        )

    def get_classifier(self) -> nn.Module:
        """The whole dense head (all three layers), so a linear probe trains what the paper calls the classifier."""
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
