"""A plain `pip install .` (a wheel, not the editable checkout) trains, evaluates and finds emotions.

The editable install every other test runs against reads the checkout's ``conf/`` and ``assets/`` in place, so
it cannot show that the wheel carries them. Here the wheel is built from a copy of the sources (so stale
``build/`` leftovers in the checkout cannot leak into it), installed into a bare ``--target`` folder, and the
three commands run from an empty folder outside the checkout with only that folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from conftest import face_photo, make_tiny_fer

ROOT = Path(__file__).resolve().parents[1]
QUIET_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
             "HYDRA_FULL_ERROR": "1"}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    site: Path  # the `pip install --target` folder: the only place fer_lightning can come from
    work: Path  # an empty working folder outside the checkout; commands write their outputs/ here
    env: dict[str, str]


def _copy_sources(dst: Path) -> Path:
    """What the build reads (package, configs, metadata), without the checkout's build/, caches or outputs."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "fer_lightning", dst / "fer_lightning", ignore=ignore)
    shutil.copytree(ROOT / "conf", dst / "conf", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    return dst


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(base / "src")
    dist, site, work = base / "dist", base / "site", base / "work"
    work.mkdir()
    build_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build_env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(dist)],
         cwd=base, env=build_env)
    (wheel,) = dist.glob("fer_lightning-*.whl")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
         cwd=base, env=build_env)
    env = {**build_env, **QUIET_ENV, "PYTHONPATH": str(site), "FER_LIGHTNING_CACHE": str(base / "cache")}
    return Installed(wheel=wheel, site=site, work=work, env=env)


def test_the_wheel_carries_every_module_config_and_asset(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fer_lightning").rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = sorted(modules - names)
    assert not missing, f"not in the wheel (add their packages to [tool.setuptools] packages): {missing}"
    configs = {"fer_lightning/conf/" + p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert len(configs) > 40 and configs <= names, sorted(configs - names)
    assets = {"fer_lightning/assets/" + name for name in ("fer2013_compact_cnn.ckpt", "fer2013_compact_cnn.onnx",
                                                          "fer2013_compact_cnn.json", "MODEL_CARD.md",
                                                          "face_detection_yunet.onnx", "YUNET_LICENSE.txt")}
    assert assets <= names
    assert not [n for n in names if n.startswith("conf/")], "configs belong inside the package, not at the top level"


def test_train_evaluate_and_predict_from_the_installed_wheel(installed: Installed) -> None:
    work, env, site = installed.work, installed.env, installed.site.resolve()
    where = _run([sys.executable, "-c", "import fer_lightning, fer_lightning.config as c; "
                  "print(fer_lightning.__file__); print(c.CONF_DIR)"], cwd=work, env=env).stdout.split()
    assert [Path(p).resolve().is_relative_to(site) for p in where] == [True, True], (where, site)
    assert Path(where[1]) == site / "fer_lightning" / "conf"

    _run([sys.executable, "-m", "fer_lightning", "data=synthetic", "+experiment=compact_cnn", "+debug=limit",
          "logger=csv", "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
          "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.num_train=128", "data.num_val=64",
          "data.num_test=64", "callbacks.progress_bar=null", "callbacks.model_summary=null"], cwd=work, env=env)
    (run_dir,) = (work / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/acc" in metrics
    checkpoints = sorted(p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    assert checkpoints, sorted((run_dir / "checkpoints").iterdir())

    tiny = make_tiny_fer(work.parent / "tiny_fer")
    _run([sys.executable, "-m", "fer_lightning.evaluate", f"ckpt_paths={checkpoints[0]}", f"data.root={tiny.zip}"],
         cwd=work, env=env)
    (eval_dir,) = (work / "outputs" / "eval" / "runs").iterdir()
    eval_metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert "val/acc" in eval_metrics and "test/acc" in eval_metrics, sorted(eval_metrics)

    photo = work.parent / "astronaut.png"
    assert cv2.imwrite(str(photo), face_photo())
    out = work.parent / "predictions"
    _run([sys.executable, "-m", "fer_lightning.predict", f"input={photo}", f"output={out}", "detector=haar"],
         cwd=work, env=env)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line.strip()]
    faces = [r for r in records if r.get("box") and r.get("label")]  # a frame without a face has label null
    assert faces, records


def test_typos_and_the_users_own_configs_from_the_installed_wheel(installed: Installed) -> None:
    """The checks read the packaged configs, and point to --config-dir, not into site-packages, for new ones."""
    env, work = installed.env, installed.work
    typo = subprocess.run([sys.executable, "-m", "fer_lightning", "+experiment=compact_cn"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2, typo.stderr[-3000:]
    assert "Did you mean 'compact_cnn'?" in typo.stderr and "--config-dir" in typo.stderr, typo.stderr
    assert "site-packages" not in typo.stderr and str(installed.site) not in typo.stderr, typo.stderr

    own = work.parent / "my_conf" / "experiment"
    own.mkdir(parents=True)
    (own / "mine.yaml").write_text("# @package _global_\nexperiment_name: mine\n")
    result = _run([sys.executable, "-m", "fer_lightning", "--config-dir", str(own.parent), "+experiment=mine",
                   "--cfg", "job", "-p", "experiment_name"], cwd=work, env=env)
    assert result.stdout.strip() == "mine"
