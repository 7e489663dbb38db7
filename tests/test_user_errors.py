"""A user error ends every command with one line and exit status 2, before anything is created; a run is quiet.

Each command runs as a user runs it (a subprocess from an empty folder) and the folder is checked afterwards: no run
folder, no W&B run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import fer_lightning.inference.detectors as detectors
from fer_lightning.cli.predict import main as predict_main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "fer_lightning" / "assets" / "fer2013_compact_cnn.ckpt"


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "FER2013_ROOT")}
    environment.update({"WANDB_MODE": "offline", "MPLBACKEND": "Agg", **env})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)


def _created(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize(("args", "message"), [
    (["fer_lightning", "data.root=/no/such/fer2013.zip", "+experiment=compact_cnn"],
     "error: FER2013 not found at /no/such/fer2013.zip (data.root"),
    (["fer_lightning", "data=synthetic", "ckpt_path=/no/such/model.ckpt"],
     "error: ckpt_path=/no/such/model.ckpt: no such checkpoint file or run directory"),
    (["fer_lightning.evaluate", "ckpt_paths=/no/such/model.ckpt", "data=synthetic"],
     "error: checkpoint not found: /no/such/model.ckpt (ckpt_paths)"),
    (["fer_lightning.evaluate", f"ckpt_paths={SHIPPED}", "data.root=/no/such/folder"],
     "error: FER2013 not found at /no/such/folder"),
    (["fer_lightning", "+experiment=resnet", "data=synthetic"],
     "error: model.pretrained=true needs ImageNet weights for 'resnet18'"),
], ids=["train_wrong_data", "train_missing_ckpt", "eval_missing_ckpt", "eval_wrong_data", "offline_pretrained"])
def test_user_errors_are_one_line_exit_2_and_create_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    empty_cache = tmp_path / "hub"  # no cached weights, and the hub is off limits
    started = time.perf_counter()
    result = _run(args, tmp_path, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(empty_cache), TORCH_HOME=str(empty_cache))
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]  # one line
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert _created(tmp_path) == [], "a failed command left files behind"
    assert seconds < 60  # generous for a loaded CI machine; the point is no minute of hub retries


def test_the_traceback_is_there_when_asked_for(tmp_path: Path) -> None:
    result = _run(["fer_lightning", "data=synthetic", "ckpt_path=/no/such/model.ckpt"], tmp_path,
                  HYDRA_FULL_ERROR="1")
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "CheckpointNotFoundError" in result.stderr


def test_predict_without_the_yunet_file_says_the_command_line_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def no_network(url: str, target: Path) -> None:
        raise OSError("Name or service not known")

    monkeypatch.delenv(detectors.YUNET_ENV, raising=False)
    monkeypatch.setenv(detectors.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(detectors, "_download", no_network)
    monkeypatch.setattr(detectors, "PACKAGED_YUNET", tmp_path / "stripped_install" / "face_detection_yunet.onnx")
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    status = predict_main([f"input={photo}", "detector=yunet", f"output={tmp_path / 'out'}", "progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: the YuNet face-detection model is missing from this installation")
    assert "could not be downloaded" in err[0] and "reinstall fer_lightning" in err[0]
    assert "yunet_model=" in err[0] and "model_path=" not in err[0] and "detector=haar" in err[0]


def test_a_run_prints_each_line_once_without_lightning_noise(tmp_path: Path) -> None:
    result = _run(["fer_lightning", "data=synthetic", "+experiment=compact_cnn", "trainer.max_epochs=1",
                   "data.num_train=64", "data.num_val=32", "data.num_test=32", "logger=wandb"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for noise in ("INFO: ", "GPU available", "💡 Tip", "was called without a model", "no last checkpoint available",
                  "anonymous setting has no effect", "Loaded model weights from the checkpoint", "LeafSpec"):
        assert noise not in output, noise
    logged = [line.split("] - ", 1)[1] for line in output.splitlines() if "] - " in line]
    # validate and test each restore the selected checkpoint: that line comes twice, in different stages
    once = [line for line in logged if not line.startswith("Restoring states from the checkpoint path")]
    assert len(once) == len(set(once)), "a log line was printed twice"
    assert any("Results: val/acc=" in line for line in logged)
    assert any(line.startswith("W&B run saved offline; upload it with: wandb sync ") for line in logged)
