"""`model.net_kwargs`: a network's own arguments (a wider CompactCNN, timm's drop_path_rate) travel with its
checkpoint, rebuild it for inference, and are checked on resume; an argument the network lacks is named."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Trainer

from fer_lightning.assets import shipped_model_file
from fer_lightning.checkpoints import CheckpointMismatchError, check_checkpoint_matches, read_checkpoint_meta
from fer_lightning.config import compose_config
from fer_lightning.inference.classifier import load_classifier
from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.models.factory import NetworkArgumentsError, create_network
from fer_lightning.models.module import FERClassifier

WIDER = ["+experiment=compact_cnn", "model.net_kwargs={widths:[8,16,32,64]}"]


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _model_cfg(overrides: list[str], tmp_path: Path):
    return compose_config("train", ["data=synthetic", *overrides], tmp_path / "run").model


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> tuple[FERClassifier, Path]:
    """A narrow CompactCNN after one training step, and the checkpoint the Trainer wrote of it."""
    from hydra.utils import instantiate

    out = tmp_path_factory.mktemp("narrow")
    cfg = compose_config("train", ["data=synthetic", *WIDER, "data.num_train=32", "data.num_val=16",
                                   "data.num_test=16", "data.batch_size=16"], out)
    model = instantiate(cfg.model)
    trainer = Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=out)
    trainer.fit(model, datamodule=instantiate(cfg.data))
    path = out / "narrow.ckpt"
    trainer.save_checkpoint(path)
    return model, path


def test_net_kwargs_change_the_network_and_its_checkpoint_rebuilds_it(narrow: tuple[FERClassifier, Path],
                                                                     tmp_path: Path) -> None:
    from hydra.utils import instantiate

    narrow, path = narrow
    default = instantiate(_model_cfg(["+experiment=compact_cnn"], tmp_path))
    assert _params(narrow.net) < _params(default.net) / 3
    assert narrow.hparams.net_kwargs == {"widths": [8, 16, 32, 64]} and default.hparams.net_kwargs == {}
    torch.load(path, map_location="cpu", weights_only=True)  # plain data: the safe loader reads it
    assert read_checkpoint_meta(path).net_kwargs == {"widths": [8, 16, 32, 64]}
    restored = FERClassifier.from_checkpoint(path)
    assert _params(restored.net) == _params(narrow.net)
    faces = torch.rand(3, 1, 48, 48)
    narrow.eval()
    restored.eval()
    torch.testing.assert_close(restored.net(faces), narrow.net(faces))
    recognizer = EmotionRecognizer(load_classifier(path), detector="none")  # the inference loader: no config
    probs = recognizer.predict_faces([np.zeros((48, 48), dtype=np.uint8)] * 2)
    assert probs.shape == (2, 7)


def test_resuming_with_other_net_kwargs_is_refused_with_the_matching_override(narrow: tuple[FERClassifier, Path],
                                                                             tmp_path: Path) -> None:
    shipped = shipped_model_file("ckpt")  # a wide compact CNN (cpu_budget recipe): its widths travel with it
    widths = read_checkpoint_meta(shipped).net_kwargs["widths"]
    shipped_widths = f"model.net_kwargs={{widths:[{','.join(map(str, widths))}]}}"
    check_checkpoint_matches(shipped, _model_cfg(["+experiment=cpu_budget", shipped_widths], tmp_path))
    with pytest.raises(CheckpointMismatchError, match=re.escape(f"(different net_kwargs). Resume with the "
                                                                f"checkpoint's settings ('{shipped_widths}')")):
        check_checkpoint_matches(shipped, _model_cfg(["+experiment=cpu_budget"], tmp_path))
    with pytest.raises(CheckpointMismatchError, match=r"net_kwargs=\{widths:\[8,16,32,64\]\}\) \(different "
                                                      r"(input_size, )?net_kwargs\)"):
        check_checkpoint_matches(shipped, _model_cfg(WIDER, tmp_path))
    _, path = narrow
    check_checkpoint_matches(path, _model_cfg(WIDER, tmp_path))
    with pytest.raises(CheckpointMismatchError, match=r"'model\.net_kwargs=\{widths:\[8,16,32,64\]\}'"):
        check_checkpoint_matches(path, _model_cfg(["+experiment=compact_cnn"], tmp_path))


def test_an_argument_the_network_lacks_is_named_with_those_it_takes() -> None:
    with pytest.raises(NetworkArgumentsError, match=r"\['width'\]: 'compact_cnn' takes \['widths', 'depths'\]"):
        create_network("compact_cnn", num_classes=7, net_kwargs={"width": 3})
    with pytest.raises(NetworkArgumentsError, match=r"\['drop_rate'\]: set them as model\.drop_rate"):
        create_network("compact_cnn", num_classes=7, net_kwargs={"drop_rate": 0.5})
    with pytest.raises(NetworkArgumentsError, match="timm's 'resnet10t' refused them"):
        create_network("resnet10t", num_classes=7, net_kwargs={"no_such_argument": 1})
    def drop_paths(net: torch.nn.Module) -> int:
        return sum(type(module).__name__ == "DropPath" for module in net.modules())

    assert drop_paths(create_network("resnet10t", num_classes=7)) == 0
    assert drop_paths(create_network("resnet10t", num_classes=7, net_kwargs={"drop_path_rate": 0.1})) > 0
    vgg = create_network("vgg_fer", num_classes=7, input_size=40, net_kwargs={"hidden": 64})
    assert _params(vgg) < 6_000_000  # the 4096-unit head shrunk


def test_the_preflight_names_a_bad_argument_before_the_run_exists(tmp_path: Path) -> None:
    from fer_lightning.preflight import check_network_arguments

    check_network_arguments(_model_cfg(WIDER, tmp_path))
    with pytest.raises(NetworkArgumentsError, match=r"\['width'\]: 'compact_cnn' takes"):
        check_network_arguments(_model_cfg(["+experiment=compact_cnn", "model.net_kwargs={width:3}"], tmp_path))
