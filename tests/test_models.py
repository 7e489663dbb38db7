"""Networks and the network factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fer_lightning.models.factory import create_network
from fer_lightning.models.scratch import CompactCNN, SeedCNN
from fer_lightning.models.weights import PretrainedWeightsError


def test_seed_cnn_matches_the_keras_architecture() -> None:
    net = SeedCNN(num_classes=7)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 512, 512]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3), (5, 5), (3, 3), (3, 3)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.features) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.features) == 4
    dense = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(512 * 3 * 3, 256), (256, 512), (512, 7)]
    assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


def test_seed_cnn_l2_penalty_is_the_keras_kernel_regularizer() -> None:
    net = SeedCNN()
    convs = [m for m in net.features if isinstance(m, nn.Conv2d) and m.out_channels == 512]
    expected = 0.01 * sum(c.weight.pow(2).sum() for c in convs)
    torch.testing.assert_close(net.regularization_loss(), expected)


@pytest.mark.parametrize("size", [40, 44, 48, 64])
def test_compact_cnn_takes_any_input_size(size: int) -> None:
    assert CompactCNN()(torch.zeros(2, 1, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "scratch_cnn", "compact_cnn"])
def test_factory_builds_grayscale_networks(name: str) -> None:
    net = create_network(name, num_classes=7, in_chans=1, pretrained=False, drop_rate=0.1)
    assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


def test_unknown_network_suggests_timm_names() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        create_network("resnet1", num_classes=7)


def test_scratch_network_refuses_pretrained() -> None:
    with pytest.raises(PretrainedWeightsError, match="model.pretrained=false"):
        create_network("scratch_cnn", num_classes=7, pretrained=True)


def test_unavailable_pretrained_weights_fail_loudly_not_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline (as in CI), asking for ImageNet weights must raise, never train from a random init."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, not after retries
    with pytest.raises(PretrainedWeightsError, match="model.pretrained=false"):
        create_network("resnet18", num_classes=7, pretrained=True)
