"""Bad input to the CLIs and the model loaders: mistyped config names and keys, mismatched or broken checkpoints.

The train and evaluate CLIs are run as users run them (subprocesses); a typo must fail in a line that names the
closest valid name, before Hydra starts a run. Checkpoints are built here (no training loop beyond one step), so
the whole file runs in seconds.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from fer_lightning import cli_checks
from fer_lightning.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    check_checkpoint_matches,
    experiments_for_backbone,
    read_checkpoint_meta,
)
from fer_lightning.cli.export import main as export_main
from fer_lightning.cli_checks import ConfigError, check_argv, check_overrides, run_checked
from fer_lightning.config import compose_config
from fer_lightning.evaluation import evaluate
from fer_lightning.inference.classifier import TorchEmotionClassifier, load_classifier
from fer_lightning.labels import EMOTIONS
from fer_lightning.models.module import FERClassifier

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "fer_lightning" / "assets" / "fer2013_compact_cnn.ckpt"
SHIPPED_ONNX = SHIPPED.with_suffix(".onnx")
THREE_CLASSES = ("calm", "joy", "anger")


def _cli(module: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "FER_LIGHTNING_CACHE": str(tmp_path / "cache"), "HYDRA_FULL_ERROR": "0"}
    env.pop("FER_LIGHTNING_SKIP_CONFIG_CHECKS", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _train_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return _cli("fer_lightning", args, tmp_path)


def _config_error(config_name: str, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        check_overrides(config_name, overrides)
    return str(caught.value)


# --- Config group options -------------------------------------------------------------------------------------

def test_cli_unknown_experiment_suggests_the_closest_and_starts_no_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _train_cli(["+experiment=resnt", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 2
    assert ("error: Unknown experiment 'resnt'. Did you mean 'resnet'? Available: compact_cnn, cpu_budget, "
            in result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_cli_unknown_model_option_suggests_the_closest(tmp_path: Path) -> None:
    result = _train_cli(["model=scrach_cnn", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    assert "error: Unknown model 'scrach_cnn'. Did you mean 'scratch_cnn'? Available: compact_cnn, " in result.stderr
    assert "conf/model/" in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "group", "meant"), [
    ("trainer=gpu_bf61", "trainer", "gpu_bf16"),
    ("logger=wandbb", "logger", "wandb"),
    ("data=fer2031", "data", "fer2013"),
    ("+launcher=slrum", "launcher", "slurm"),
    ("+sweep=scratch_vs_transfr", "sweep", "scratch_vs_transfer"),
    ("+debug=fdrr", "debug", "fdr"),
    ("model/optimizer=adamww", "model/optimizer", "adamw"),
    ("model/scheduler=cosin", "model/scheduler", "cosine"),
    ("transforms=standart", "transforms", "standard"),
    ("hydra/launcher=jobli", "hydra/launcher", "joblib"),
])
def test_every_config_group_suggests_its_closest_option(override: str, group: str, meant: str) -> None:
    value = override.split("=", 1)[1]
    message = _config_error("train", [override])
    assert message.startswith(f"Unknown {group} '{value}'. Did you mean '{meant}'? Available: ")


def test_a_sweep_is_checked_option_by_option(tmp_path: Path) -> None:
    result = _train_cli(["--multirun", "+experiment=resnet,resnt", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert result.returncode == 2
    assert "error: Unknown experiment 'resnt'. Did you mean 'resnet'?" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_a_mistyped_group_added_as_a_key_is_caught() -> None:
    # `+experiement=resnet` would add a key nobody reads and train the default model.
    message = _config_error("train", ["+experiement=resnet"])
    assert "Did you mean '+experiment=resnet'?" in message


# --- Config keys ----------------------------------------------------------------------------------------------

def test_cli_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    result = _train_cli(["trainer.max_epoch=3", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    assert ("error: Unknown config key 'trainer.max_epoch'. Did you mean 'trainer.max_epochs'? To add a new key on "
            "purpose, write +trainer.max_epoch=3." in result.stderr)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("overrides", "key", "meant"), [
    (["model.optimizer.lrr=0.1"], "model.optimizer.lrr", "model.optimizer.lr"),
    (["sed=1"], "sed", "seed"),
    (["data.batchsize=32"], "data.batchsize", "data.batch_size"),
    (["trainr.max_epochs=3"], "trainr.max_epochs", "trainer.max_epochs"),
    (["max_epochs=3"], "max_epochs", "trainer.max_epochs"),
    (["callbacks.early_stoping.patience=3"], "callbacks.early_stoping.patience", "callbacks.early_stopping.patience"),
    (["logger.wandb.projet=x"], "logger.wandb.projet", "logger.wandb.project"),
    (["model.optimizer={lrr: 0.1}"], "model.optimizer.lrr", "model.optimizer.lr"),  # keys inside a dict value
    (["+experiment=resnet", "model.finetun=full"], "model.finetun", "model.finetune"),  # the experiment's model
])
def test_unknown_keys_suggest_the_closest(overrides: list[str], key: str, meant: str) -> None:
    assert _config_error("train", overrides).startswith(f"Unknown config key '{key}'. Did you mean '{meant}'?")


def test_a_key_the_chosen_groups_do_not_have_says_what_is_there() -> None:
    # scratch_cnn's Adam has no momentum (SGD's has): no wrong guess, the keys that exist instead.
    message = _config_error("train", ["model.optimizer.momentum=0.9"])
    assert "Unknown config key 'model.optimizer.momentum'. 'model.optimizer' has: lr, _target_, _partial_." in message
    check_overrides("train", ["model/optimizer=sgd", "model.optimizer.momentum=0.9"])
    # +debug=overfit nulls the early stopping callback, wherever it stands on the command line
    assert "'callbacks.early_stopping' is null here" in _config_error(
        "train", ["callbacks.early_stopping.patience=3", "+debug=overfit"])


@pytest.mark.parametrize("overrides", [
    ["+trainer.max_epoch=3"],  # keys added on purpose are the user's business
    ["++my_note=hello"],
    ["++trainer.max_epochs=3"],
    ["model.num_classes=3", "+model.class_names=[a,b,c]"],
    ["+experiment=cpu_budget", "model.scheduler.warmup_epochs=1", "data.num_workers=0"],
    ["model=timm", "model.backbone=resnet18", "tags.0=x", "~callbacks.early_stopping"],
    ["+launcher=local_parallel", "+sweep=scratch_vs_transfer", "hydra.launcher.n_jobs=4", "trainer.max_epochs=2"],
    ["+experiment=glob(efficientnet_lite0*)", "model.finetune.mode=full"],
    ["+debug=[limit,fdr]", "trainer.max_epochs=1"],  # several options of a group at once
    ["+hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.max_epochs=2"],
    ["trainer.max_epochs=abc"],  # a wrong value is not a wrong key: Hydra or the code says what is wrong with it
])
def test_valid_and_deliberate_overrides_pass(overrides: list[str]) -> None:
    check_overrides("train", overrides)


@pytest.mark.parametrize("argv", [
    ["--multirun", "model.optimizer.lr=0.1,0.01", "seed=range(3)", "+experiment=compact_cnn,scratch_cnn"],
    ["-m", "+experiment=compact_cnn,resnet", "model.finetune.mode=full", "hydra/launcher=joblib"],
    ["--cfg", "job", "-p", "trainer", "trainer.max_epochs=2"],
    ["--help"],
    ["--info", "config", "not_a_key=1"],  # Hydra's info composes nothing of ours
])
def test_multiruns_and_hydra_flags_pass(argv: list[str]) -> None:
    check_argv("train", argv)


def test_swept_keys_are_checked_in_every_composed_combination() -> None:
    message = _config_error("train", ["+experiment=resnet,compact_cnn", "model.optimizer.lrr=0.1,0.01"])
    assert message.startswith("Unknown config key 'model.optimizer.lrr' (with +experiment=resnet). Did you mean "
                              "'model.optimizer.lr'?")
    assert "Did you mean 'trainer.max_epochs'?" in _config_error("train", ["seed=range(3)", "trainer.max_epoch=2"])
    # `+sweep=...` sweeps experiments through hydra.sweeper.params: each is composed too. The default model's
    # plateau scheduler has a patience; the transfer arms' cosine has not, so their jobs would fail after the first.
    assert _config_error("train", ["+sweep=scratch_vs_transfer", "model.scheduler.patience=3"]).startswith(
        "Unknown config key 'model.scheduler.patience' (with +experiment=efficientnet_lite0_random).")


def test_cli_valid_multirun_reaches_the_launcher(tmp_path: Path) -> None:
    # experiment_name points nowhere, so each job stops as soon as Hydra names its directory, before any training
    # code loads: what matters here is that the checks let the whole sweep through to the launcher.
    result = _train_cli(["--multirun", "+experiment=compact_cnn,scratch_cnn", "model.optimizer.lr=0.1,0.01",
                         "seed=range(2)", "experiment_name=${no_such_key}",
                         f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    output = result.stdout + result.stderr
    assert "Launching 8 jobs locally" in output, output[-3000:]
    assert "#0 : +experiment=compact_cnn model.optimizer.lr=0.1 seed=0" in output
    assert "Unknown" not in output


def test_cli_hydra_flags_still_work(tmp_path: Path) -> None:
    result = _train_cli(["--cfg", "job", "-p", "trainer", "trainer.max_epochs=2"], tmp_path)
    assert result.returncode == 0 and "max_epochs: 2" in result.stdout, result.stderr[-2000:]
    result = _train_cli(["hydra/launcher=joblib", "--cfg", "hydra"], tmp_path)
    assert result.returncode == 0 and "JoblibLauncher" in result.stdout, result.stderr[-2000:]


def test_evaluate_cli_checks_its_own_config(tmp_path: Path) -> None:
    result = _cli("fer_lightning.evaluate", ["ckpt_path=model.ckpt", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    assert "error: Unknown config key 'ckpt_path'. Did you mean 'ckpt_paths'?" in result.stderr
    assert not (tmp_path / "run").exists()
    assert _config_error("eval", ["tta_crop=40"]).startswith("Unknown config key 'tta_crop'. Did you mean "
                                                             "'tta_crop_size'?")
    check_overrides("eval", ["ckpt_paths=[a.ckpt,b.ckpt]", "tta=flip", "data.root=x", "splits=[test]"])


def test_run_checked_exits_2_on_a_typo_and_never_blocks_on_its_own_flaws(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_checked(lambda: pytest.fail("the app must not start"), "train", ["sed=1"])
    assert exited.value.code == 2 and capsys.readouterr().err.startswith("error: Unknown config key 'sed'.")

    def broken_check(config_name: str, argv: list[str]) -> None:
        raise RuntimeError("a bug in the checks")

    monkeypatch.setattr(cli_checks, "check_argv", broken_check)
    assert run_checked(lambda: "ran", "train", ["seed=1"]) == "ran"
    assert "skipped the config checks (RuntimeError: a bug in the checks)" in capsys.readouterr().err


# --- Spellings Hydra refuses, passed on as it wants them ------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    (["trainer.gradient_clip_val=1.0"], ["+trainer.gradient_clip_val=1.0"]),  # a Trainer argument conf/ lacks
    (["trainer.max_epochs=3", "trainer.accumulate_grad_batches=2", "seed=1"],
     ["trainer.max_epochs=3", "+trainer.accumulate_grad_batches=2", "seed=1"]),  # keys the config has stay
    (["-m", "trainer.gradient_clip_val=0.5,1.0"], ["-m", "+trainer.gradient_clip_val=0.5,1.0"]),
    (["+debug=fdr", "trainer.fast_dev_run=2"], ["+debug=fdr", "trainer.fast_dev_run=2"]),  # +debug=fdr sets it
    (["-m", "+debug=fdr,limit", "trainer.fast_dev_run=2"],  # fdr has it, limit not: only ++ fits both jobs
     ["-m", "+debug=fdr,limit", "++trainer.fast_dev_run=2"]),
    (["+trainer.gradient_clip_val=1", "++trainer.detect_anomaly=true", "~trainer.deterministic"],
     ["+trainer.gradient_clip_val=1", "++trainer.detect_anomaly=true", "~trainer.deterministic"]),
    (["experiment=compact_cnn", "data=synthetic"], ["+experiment=compact_cnn", "data=synthetic"]),
    (["-m", "experiment=compact_cnn,resnet", "debug=fdr", "launcher=local_parallel", "hparams_search=optuna"],
     ["-m", "+experiment=compact_cnn,resnet", "+debug=fdr", "+launcher=local_parallel", "+hparams_search=optuna"]),
    (["sweep=scratch_vs_transfer", "debug=[limit,fdr]", "model=timm", "model/optimizer=sgd"],
     ["+sweep=scratch_vs_transfer", "+debug=[limit,fdr]", "model=timm", "model/optimizer=sgd"]),
    (["--cfg", "job", "-p", "trainer", "experiment=resnet", "trainer.gradient_clip_val=1"],  # flags stay in place
     ["--cfg", "job", "-p", "trainer", "+experiment=resnet", "+trainer.gradient_clip_val=1"]),
])
def test_trainer_arguments_and_added_groups_are_passed_on_with_a_plus(argv: list[str], expected: list[str]) -> None:
    assert check_argv("train", argv) == expected


def test_a_mistyped_trainer_argument_suggests_the_closest_of_config_and_trainer() -> None:
    assert _config_error("train", ["trainer.gradient_clip_vall=1.0"]).startswith(
        "Unknown config key 'trainer.gradient_clip_vall'. Did you mean 'trainer.gradient_clip_val'?")
    assert _config_error("train", ["trainer.acumulate_grad_batches=1,2"]).startswith(  # a sweep's values
        "Unknown config key 'trainer.acumulate_grad_batches'. Did you mean 'trainer.accumulate_grad_batches'?")
    assert "every argument of lightning.pytorch.Trainer" in _config_error("train", ["trainer.zzz=1"])
    # The train command hands the Trainer its callbacks and loggers: trainer.logger=false would be ignored.
    assert _config_error("train", ["trainer.logger=false"]) == (
        "'trainer.logger' cannot be set: the Trainer gets its logger from the logger config group "
        "(logger=csv|none|wandb, or logger.KEY=...).")
    # Only trainer.X itself: a Trainer argument is no key of the other nodes.
    assert _config_error("train", ["model.gradient_clip_val=1"]).startswith("Unknown config key 'model.gradient_clip")


def test_the_evaluate_config_takes_no_trainer_arguments_nor_training_groups() -> None:
    assert _config_error("eval", ["trainer.gradient_clip_val=1.0"]).startswith(
        "Unknown config key 'trainer.gradient_clip_val'. No similar key in conf/eval.yaml")
    assert _config_error("eval", ["experiment=resnet"]) == (
        "python -m fer_lightning.evaluate does not use a config group 'experiment' (its config chooses: data, "
        "extra_test, paths). To add one anyway, write +experiment=resnet.")
    assert check_argv("eval", ["data=synthetic", "ckpt_paths=a.ckpt"]) == ["data=synthetic", "ckpt_paths=a.ckpt"]


def test_trainer_arguments_are_read_from_lightnings_source_as_its_signature_has_them() -> None:
    # Parsed rather than imported, so a typo does not wait seconds for Lightning; both must agree.
    assert cli_checks._trainer_parameters_from_source() == cli_checks._trainer_parameters_from_signature()
    assert {"gradient_clip_val", "max_epochs", "accumulate_grad_batches"} <= cli_checks._trainer_parameters()


def test_run_checked_hands_hydra_the_rewritten_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["fer-train", "experiment=compact_cnn", "trainer.gradient_clip_val=1.0"])
    assert run_checked(lambda: list(sys.argv), "train") == [
        "fer-train", "+experiment=compact_cnn", "+trainer.gradient_clip_val=1.0"]
    monkeypatch.setenv(cli_checks.SKIP_ENV, "1")  # checks off: the command line goes to Hydra as typed
    monkeypatch.setattr(sys, "argv", ["fer-train", "experiment=compact_cnn"])
    assert run_checked(lambda: list(sys.argv), "train") == ["fer-train", "experiment=compact_cnn"]


def test_cli_composes_trainer_arguments_and_experiments_without_a_plus(tmp_path: Path) -> None:
    import yaml

    result = _train_cli(["experiment=compact_cnn", "trainer.gradient_clip_val=1.0", "--cfg", "job"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = yaml.safe_load(result.stdout)
    assert cfg["experiment_name"] == "compact_cnn" and cfg["model"]["backbone"] == "compact_cnn"
    assert cfg["trainer"]["gradient_clip_val"] == 1.0 and cfg["trainer"]["max_epochs"] == 30


def test_cli_mistyped_trainer_argument_fails_in_one_line(tmp_path: Path) -> None:
    result = _train_cli(["trainer.gradient_clip_vall=1.0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: Unknown config key 'trainer.gradient_clip_vall'. Did you mean "
                                    "'trainer.gradient_clip_val'?")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_cli_sweep_of_trainer_arguments_and_experiments_reaches_the_launcher(tmp_path: Path) -> None:
    # As test_cli_valid_multirun_reaches_the_launcher: each job stops once Hydra names its folder.
    result = _train_cli(["--multirun", "experiment=compact_cnn,scratch_cnn", "trainer.gradient_clip_val=0.5,1.0",
                         "experiment_name=${no_such_key}", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    output = result.stdout + result.stderr
    assert "Launching 4 jobs locally" in output, output[-3000:]
    assert "#0 : +experiment=compact_cnn +trainer.gradient_clip_val=0.5 " in output


def test_predict_cli_suggests_the_closest_key(capsys: pytest.CaptureFixture[str]) -> None:
    from fer_lightning.cli.predict import EXIT_BAD_INPUT
    from fer_lightning.cli.predict import main as predict_main

    assert predict_main(["input=x.jpg", "ckpt=foo"]) == EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'ckpt' (did you mean 'ckpt_path'?)") and len(err.splitlines()) == 1


# --- The user's own configs (--config-dir, hydra.searchpath) ------------------------------------------------

def _user_conf(folder: Path) -> Path:
    """A folder of one's own with an experiment this project does not have, as the README suggests keeping them."""
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "my_probe.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: compact_cnn\nexperiment_name: my_probe\n"
        "probe_note: baseline\ntrainer:\n  max_epochs: 2\n")
    return folder


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_an_experiment_of_the_users_own_folder_is_no_typo(how: str, tmp_path: Path) -> None:
    folder = _user_conf(tmp_path / "my_conf")
    where = ["--config-dir", str(folder)] if how == "--config-dir" else [f"hydra.searchpath=[file://{folder}]"]
    check_argv("train", [*where, "+experiment=my_probe", "trainer.max_epochs=1", "model.optimizer.lr=0.01",
                         "probe_note=second"])  # a key only the user's experiment has: it was composed
    # Still checked, not waved through: the user's options are suggested, and keys are checked with them.
    with pytest.raises(ConfigError, match="Did you mean 'my_probe'\\?"):
        check_argv("train", [*where, "+experiment=my_prob"])
    with pytest.raises(ConfigError, match="Did you mean 'probe_note'\\?"):
        check_argv("train", [*where, "+experiment=my_probe", "probe_not=second"])
    # Without the folder the experiment does not exist.
    with pytest.raises(ConfigError, match="Unknown experiment 'my_probe'"):
        check_argv("train", ["+experiment=my_probe"])


def test_a_searchpath_in_the_users_primary_config_is_searched_too(tmp_path: Path) -> None:
    experiments = _user_conf(tmp_path / "shared_conf")
    primary = tmp_path / "my_app"
    primary.mkdir()
    (primary / "my_train.yaml").write_text(
        f"defaults:\n  - train\n  - _self_\nhydra:\n  searchpath: [file://{experiments}]\n")
    check_argv("train", ["--config-dir", str(primary), "--config-name", "my_train", "+experiment=my_probe"])


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_cli_runs_an_experiment_of_the_users_own_folder(how: str, tmp_path: Path) -> None:
    folder = _user_conf(tmp_path / "my_conf")
    where = ["--config-dir", str(folder)] if how == "--config-dir" else [f"hydra.searchpath=[file://{folder}]"]
    result = _train_cli([*where, "+experiment=my_probe", "--cfg", "job", "-p", "experiment_name"], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "my_probe", result.stderr[-2000:]
    result = _train_cli([*where, "+experiment=my_prob", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2 and "Did you mean 'my_probe'?" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_the_errors_are_the_projects_and_the_builtins_they_always_were() -> None:
    from fer_lightning.config import RunDirTakenError
    from fer_lightning.errors import FERLightningError

    for error, builtin in [(ConfigError, ValueError), (CheckpointError, ValueError),
                           (CheckpointMismatchError, ValueError), (RunDirTakenError, FileExistsError)]:
        assert issubclass(error, FERLightningError) and issubclass(error, builtin), error


# --- Checkpoints ----------------------------------------------------------------------------------------------

def _save_like_lightning(model: FERClassifier, path: Path, class_names: list[str] | None = None) -> Path:
    """The dictionary `Trainer.save_checkpoint` writes for this module (hparams as `dict(model.hparams)`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = class_names if class_names is not None else list(model.class_names)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "epoch": 3,
                "global_step": 120, "pytorch-lightning_version": "2.6.0", "fer_lightning": {"class_names": names}},
               path)
    return path


@pytest.fixture(scope="module")
def three_class_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compact CNN for 3 other classes, built from the config as train builds it (OmegaConf hparams)."""
    from hydra.utils import instantiate

    cfg = compose_config("train", ["+experiment=compact_cnn", "model.num_classes=3",
                                   f"+model.class_names=[{','.join(THREE_CLASSES)}]"], tmp_path_factory.mktemp("c"))
    model = instantiate(cfg.model)
    return _save_like_lightning(model, tmp_path_factory.mktemp("three") / "three.ckpt")


@pytest.fixture(scope="module")
def trainer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by Lightning's Trainer after one step (optimizer, scheduler, loops, callbacks)."""
    import lightning as L
    from hydra.utils import instantiate

    out = tmp_path_factory.mktemp("trainer_ckpt")
    cfg = compose_config("train", ["data=synthetic", "+experiment=cpu_budget", "data.num_train=32",
                                   "data.num_val=16", "data.num_test=16", "data.batch_size=16"], out)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out)
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    path = out / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_meta_of_the_shipped_model() -> None:
    meta = read_checkpoint_meta(SHIPPED)
    assert (meta.backbone, meta.num_classes, meta.class_names) == ("compact_cnn", 7, EMOTIONS)
    card = json.loads(SHIPPED.with_suffix(".json").read_text())  # what ship_model.py measured and wrote
    assert (meta.input_size, meta.in_chans, meta.gray_input) == (card["input_size"], 1, "sum")
    assert (meta.epoch, meta.net_kwargs) == (card["selected_epoch"], card["net_kwargs"])
    assert meta.data["dataset"] == "fer2013"


def test_meta_of_real_trainer_checkpoints_reads_weights_only(trainer_checkpoint: Path,
                                                             three_class_checkpoint: Path) -> None:
    # Everything a Trainer checkpoint holds is plain data (optimizer and scheduler factories are not saved).
    assert {"optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(
        torch.load(trainer_checkpoint, map_location="cpu", weights_only=True))
    meta = read_checkpoint_meta(trainer_checkpoint)
    assert (meta.backbone, meta.input_size, meta.global_step) == ("compact_cnn", 44, 1)
    assert meta.data["synthetic"] is True and meta.class_names == EMOTIONS
    three = read_checkpoint_meta(three_class_checkpoint)  # hparams hold an OmegaConf ListConfig
    assert (three.num_classes, three.class_names) == (3, THREE_CLASSES)


def _write_bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = SHIPPED.read_bytes()
    files = {"random": folder / "random.ckpt", "truncated": folder / "truncated.ckpt", "empty": folder / "empty.ckpt",
             "state_dict": folder / "weights.ckpt", "no_hparams": folder / "no_hparams.ckpt",
             "code": folder / "code.ckpt"}
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"].write_bytes(b"")
    torch.save(torch.load(SHIPPED, map_location="cpu", weights_only=True)["state_dict"], files["state_dict"])
    torch.save({"state_dict": {}, "epoch": 1}, files["no_hparams"])
    torch.save({"hyper_parameters": {"backbone": "compact_cnn"}, "hook": functools.partial(print, "pwned")},
               files["code"])
    return files


@pytest.mark.parametrize(("kind", "message"), [
    ("random", "is not a PyTorch checkpoint (it does not unpickle)"),
    ("truncated", "is not a readable PyTorch checkpoint (RuntimeError: PytorchStreamReader failed"),
    ("empty", "is not a readable PyTorch checkpoint (EOFError"),
    ("state_dict", "holds weights (45 tensors) but no 'hyper_parameters': it is a plain state_dict"),
    ("no_hparams", "is a PyTorch file but not a fer_lightning checkpoint"),
    ("code", "contains Python objects beyond tensors and plain data (functools.partial)"),
])
def test_files_that_are_no_checkpoint_are_named(kind: str, message: str, tmp_path: Path) -> None:
    path = _write_bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=f"^{path}") as caught:
        read_checkpoint_meta(path)
    assert message in str(caught.value)
    with pytest.raises(CheckpointError, match=f"^{path}"):  # the inference loader says the same, not a traceback
        load_classifier(path)


def test_missing_directory_and_onnx_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"checkpoint not found: {tmp_path / 'nope.ckpt'}"):
        read_checkpoint_meta(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match=f"{tmp_path} is a directory: give the .ckpt file"):
        read_checkpoint_meta(tmp_path)
    with pytest.raises(CheckpointError, match="is an exported ONNX model, not a training checkpoint"):
        read_checkpoint_meta(SHIPPED_ONNX)


def _model_cfg(overrides: list[str], tmp_path: Path) -> DictConfig:
    return compose_config("train", overrides, tmp_path / "run").model


@pytest.fixture(scope="module")
def compact_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`+experiment=compact_cnn` as it builds by default (7 classes, 48 px, default widths), saved as train saves it.

    Built here rather than borrowed from the shipped model, whose recipe changes whenever a better model ships.
    """
    from hydra.utils import instantiate

    cfg = compose_config("train", ["+experiment=compact_cnn"], tmp_path_factory.mktemp("c7"))
    return _save_like_lightning(instantiate(cfg.model), tmp_path_factory.mktemp("compact") / "compact.ckpt")


def test_resuming_another_backbone_names_both_and_the_matching_experiment(tmp_path: Path,
                                                                          compact_checkpoint: Path) -> None:
    SHIPPED = compact_checkpoint  # noqa: N806
    with pytest.raises(CheckpointMismatchError) as caught:
        check_checkpoint_matches(SHIPPED, _model_cfg(["+experiment=resnet"], tmp_path))
    assert str(caught.value) == (
        f"Checkpoint {SHIPPED} was trained with backbone 'compact_cnn' (7 classes, 48 px); this run builds "
        "'resnet18' (7 classes, 48 px) (different backbone). Resume with the checkpoint's experiment "
        "(+experiment=compact_cnn or +experiment=cpu_budget) or drop ckpt_path.")
    check_checkpoint_matches(SHIPPED, _model_cfg(["+experiment=compact_cnn"], tmp_path))  # the same network


def test_resuming_another_input_size_class_set_or_channels_is_refused(tmp_path: Path, three_class_checkpoint: Path,
                                                                      compact_checkpoint: Path) -> None:
    SHIPPED = compact_checkpoint  # noqa: N806
    with pytest.raises(CheckpointMismatchError, match=r"\(7 classes, 44 px\) \(different input_size\)\. Resume with "
                                                      r"the checkpoint's settings \(transforms\.crop_size=48\)"):
        check_checkpoint_matches(SHIPPED, _model_cfg(["+experiment=cpu_budget"], tmp_path))
    with pytest.raises(CheckpointMismatchError, match=r"backbone 'compact_cnn' \(3 classes, 48 px\); this run builds "
                                                      r"'compact_cnn' \(7 classes, 48 px\) \(different num_classes, "
                                                      r"class_names\)"):
        check_checkpoint_matches(three_class_checkpoint, _model_cfg(["+experiment=compact_cnn"], tmp_path))
    reordered = f"+model.class_names=[{','.join(EMOTIONS[::-1])}]"
    with pytest.raises(CheckpointMismatchError, match=r"different class_names\)"):
        check_checkpoint_matches(SHIPPED, _model_cfg(["+experiment=compact_cnn", reordered], tmp_path))
    with pytest.raises(CheckpointMismatchError, match=r"different gray_input\).*model\.gray_input=sum"):
        check_checkpoint_matches(SHIPPED, _model_cfg(["+experiment=compact_cnn", "model.gray_input=repeat"], tmp_path))


def test_a_checkpoint_in_its_run_dir_suggests_the_runs_own_overrides(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "train" / "runs" / "some_run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- +experiment=cpu_budget\n- data=synthetic\n- seed=3\n")
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir()
    shutil.copy(SHIPPED, checkpoint)
    with pytest.raises(CheckpointMismatchError, match=r"Resume with the checkpoint's own overrides "
                                                      r"\(\+experiment=cpu_budget, from its run's "
                                                      r"\.hydra/overrides\.yaml\) or drop ckpt_path"):
        check_checkpoint_matches(checkpoint, _model_cfg(["+experiment=resnet"], tmp_path))


def test_experiments_are_found_by_backbone_through_their_defaults() -> None:
    assert experiments_for_backbone("resnet18") == ["resnet"]
    assert experiments_for_backbone("compact_cnn") == ["compact_cnn", "cpu_budget"]
    assert "efficientnet_lite0_staged" in experiments_for_backbone("tf_efficientnet_lite0")  # via another experiment
    assert experiments_for_backbone("no_such_net") == []


# --- Loading for inference and evaluation ----------------------------------------------------------------------

def test_inference_supports_other_class_sets_but_can_require_fer2013s(three_class_checkpoint: Path) -> None:
    classifier = load_classifier(three_class_checkpoint)
    assert classifier.class_names == THREE_CLASSES
    assert classifier.predict_proba(np.zeros((2, 1, 48, 48), dtype=np.float32)).shape == (2, 3)
    with pytest.raises(CheckpointMismatchError, match=r"three\.ckpt predicts 3 classes \['calm', 'joy', 'anger'\], "
                                                      r"but this needs the 7 classes \['angry'"):
        load_classifier(three_class_checkpoint, class_names=EMOTIONS)
    assert load_classifier(SHIPPED, class_names=EMOTIONS).class_names == EMOTIONS


def test_inconsistent_checkpoints_fail_clearly_instead_of_deep_in_torch(three_class_checkpoint: Path,
                                                                        tmp_path: Path) -> None:
    checkpoint = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    checkpoint["fer_lightning"]["class_names"] = list(EMOTIONS[:6])
    six_names = tmp_path / "six_names.ckpt"
    torch.save(checkpoint, six_names)
    with pytest.raises(CheckpointError, match=r"six_names\.ckpt names 6 classes .* for a network with 7 outputs"):
        TorchEmotionClassifier.from_checkpoint(six_names)

    checkpoint = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = torch.load(three_class_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    wrong_weights = tmp_path / "wrong_weights.ckpt"
    torch.save(checkpoint, wrong_weights)
    with pytest.raises(CheckpointError, match=r"wrong_weights\.ckpt: its weights do not fit the network its "
                                              r"hyperparameters describe \(backbone 'compact_cnn' \(7 classes"):
        load_classifier(wrong_weights)


def test_onnx_whose_metadata_does_not_label_its_outputs_is_refused(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(SHIPPED_ONNX))
    for prop in model.metadata_props:
        if prop.key == "fer_lightning":
            meta = json.loads(prop.value)
            meta["class_names"] = list(THREE_CLASSES)
            prop.value = json.dumps(meta)
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))
    with pytest.raises(ValueError, match=r"edited\.onnx has 7 outputs but its metadata names 3 classes"):
        load_classifier(edited)


def test_evaluate_names_a_file_that_is_no_checkpoint_and_a_foreign_class_set(tmp_path: Path,
                                                                              three_class_checkpoint: Path) -> None:
    garbage = _write_bad_files(tmp_path / "bad")["random"]
    cfg = compose_config("eval", [f"ckpt_paths=[{SHIPPED},{garbage}]", f"data.root={tmp_path / 'no_data'}",
                                  "device=cpu"], tmp_path / "out")
    with pytest.raises(CheckpointError, match=f"^{garbage} is not a PyTorch checkpoint"):
        evaluate(cfg)
    cfg = compose_config("eval", [f"ckpt_paths={three_class_checkpoint}", f"data.root={tmp_path / 'no_data'}",
                                  "device=cpu"], tmp_path / "out2")
    with pytest.raises(CheckpointMismatchError, match="predicts 3 classes .* but scoring against FER2013 labels needs "
                                                      "the 7 classes"):
        evaluate(cfg)


def test_export_cli_names_a_file_that_is_no_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _write_bad_files(tmp_path)
    assert export_main([f"ckpt_path={files['truncated']}", f"output={tmp_path / 'm.onnx'}"]) == 2  # a user error
    assert f"error: {files['truncated']} is not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert export_main([f"ckpt_path={SHIPPED_ONNX}", f"output={tmp_path / 'm.onnx'}"]) == 2
    assert "is an exported ONNX model, not a training checkpoint: give the .ckpt" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
