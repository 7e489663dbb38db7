"""Every experiment config composes and runs one batch of train/val/test (no weight download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF_DIR, compose_train_cfg
from omegaconf import OmegaConf

from fer_lightning.train import train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
SMALL_SYNTHETIC = ["data=synthetic", "data.num_train=56", "data.num_val=28", "data.num_test=28",
                   "data.batch_size=8", "data.eval_batch_size=8"]


def test_the_required_experiments_exist() -> None:
    assert {"scratch_cnn", "vgg", "resnet", "inception", "efficientnet"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_real_data_defaults(name: str, tmp_path: Path) -> None:
    cfg = compose_train_cfg(tmp_path, [f"+experiment={name}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["experiment_name"] == name
    assert resolved["data"]["_target_"].endswith("FER2013DataModule")
    assert resolved["model"]["optimizer"]["_partial_"] is True


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_fast_dev_run(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # experiment=distill learns from teachers of the user's: here a model trained by `train` (conftest's trained_run)
    teachers = [f"model.distill.teachers=['{request.getfixturevalue('trained_checkpoint')}']"] if name == "distill" \
        else []
    cfg = compose_train_cfg(tmp_path, [f"+experiment={name}", "+debug=fdr", "model.pretrained=false",
                                       "logger=csv", *SMALL_SYNTHETIC, *teachers])
    metrics, objects = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 0.0 <= metrics["val/acc"] <= 1.0
    assert metrics["experiment"] == name and metrics["synthetic"] is True
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "confusion_matrix.png").is_file()
    assert objects["model"].hparams.input_size == cfg.model.input_size


@pytest.mark.parametrize("preset", ["limit", "overfit"])
def test_debug_presets_compose(preset: str, tmp_path: Path) -> None:
    cfg = compose_train_cfg(tmp_path, [f"+debug={preset}", "data=synthetic"])
    assert OmegaConf.to_container(cfg.trainer, resolve=True)
