"""`python -m fer_lightning` as a user runs it (Hydra app, run directory, errors)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "FER_LIGHTNING_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "fer_lightning", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_trains_and_writes_a_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(["data=synthetic", "+experiment=compact_cnn", "+debug=limit", "logger=csv",
                   "callbacks.progress_bar=null", f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic" and "test/acc" in metrics
    assert Path(metrics["best_ckpt_path"]).is_file()
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "train.log").is_file()


def test_cli_missing_data_says_where_it_looked(tmp_path: Path) -> None:
    missing = tmp_path / "no_fer_here"
    result = _run([f"data.root={missing}", "+debug=fdr", "logger=none", f"hydra.run.dir={tmp_path / 'r'}"],
                  tmp_path)
    assert result.returncode != 0
    assert f"FER2013 not found at {missing}" in result.stderr
    assert "data.download=true" in result.stderr  # how to get it (the message names the ways, README the rest)


def test_cli_unknown_experiment_lists_the_available_ones(tmp_path: Path) -> None:
    result = _run(["+experiment=resnett", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert result.returncode != 0
    assert "resnet" in result.stderr and "Could not find 'experiment/resnett'" in result.stderr


def test_multirun_gives_each_job_its_own_run_dir(tmp_path: Path) -> None:
    result = _run(["--multirun", "data=synthetic", "+experiment=compact_cnn,scratch_cnn", "+debug=fdr", "logger=csv",
                   "callbacks.progress_bar=null", "data.num_train=56", "data.num_val=28", "data.num_test=28",
                   f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent.name for p in (tmp_path / "logs").glob("train/multiruns/*/*/metrics.json"))
    assert jobs == ["0_synthetic_compact_cnn", "1_synthetic_scratch_cnn"]


def _help(module: str) -> str:
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _help_examples(text: str, module: str) -> list[list[str]]:
    """The example command lines of a --help text, as argv after `python -m MODULE`."""
    prefix = f"python -m {module} "
    return [shlex.split(line.split("  #")[0].strip())[3:] for line in text.splitlines()
            if line.strip().startswith(prefix)]


def test_train_help_names_the_command_the_plus_rule_and_the_groups() -> None:
    from fer_lightning.cli_checks import check_argv

    text = _help("fer_lightning")
    assert text.startswith("python -m fer_lightning [overrides]   (also: fer-train [overrides])")
    assert "powered by Hydra" not in text and "foo.bar=value" not in text  # Hydra's generic wording
    assert "The + rule:" in text and "experiment=resnet works too" in text
    assert "trainer.X" in text and "--cfg job" in text and "README.md" in text
    for group in ("experiment", "model", "data", "trainer", "debug", "launcher", "sweep"):
        assert re.search(rf"^{group}: ", text, flags=re.M), group
    examples = _help_examples(text, "fer_lightning")
    assert 4 <= len(examples) <= 6 and any(argv[0] == "-m" for argv in examples)
    for argv in examples:
        check_argv("train", argv)  # each example is a valid command (raises ConfigError if not)


def test_evaluate_help_lists_only_what_evaluation_uses() -> None:
    from fer_lightning.cli_checks import check_argv

    text = _help("fer_lightning.evaluate")
    assert text.startswith("python -m fer_lightning.evaluate ckpt_paths=... [overrides]   (also: fer-evaluate")
    assert "powered by Hydra" not in text and "The + rule:" in text and "--cfg job" in text
    keys = set(yaml.safe_load((ROOT / "conf" / "eval.yaml").read_text())) - {"defaults", "task_name", "data"}
    assert {"ckpt_paths", "tta", "splits", "device"} <= keys
    for key in keys:  # the keys are written out in conf/hydra/eval.yaml too: every key of conf/eval.yaml
        assert re.search(rf"^  {key}=", text, flags=re.M), key
    for group in ("model", "experiment", "trainer", "callbacks", "logger", "transforms", "debug", "sweep"):
        assert not re.search(rf"^\s*{group}[:/]", text, flags=re.M), group  # training's groups are no option here
    # The groups are written out in conf/hydra/eval.yaml: they must name every option conf/ has.
    for group in ("data", "paths"):
        options = ", ".join(sorted(path.stem for path in (ROOT / "conf" / group).glob("*.yaml")))
        assert re.search(rf"^  {group}: {options}  ", text, flags=re.M), group
    examples = _help_examples(text, "fer_lightning.evaluate")
    assert 4 <= len(examples) <= 6
    for argv in examples:
        check_argv("eval", argv)
