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

    def regularization_loss(self) -> torch.Tensor:
        convs_512 = (m for m in self.features if isinstance(m, nn.Conv2d) and m.out_channels == 512)
        return self.l2 * sum(conv.weight.pow(2).sum() for conv in convs_512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
