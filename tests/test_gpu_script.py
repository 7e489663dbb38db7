"""experiments/gpu/run.sh: the one-command plan for the GPU machine, checked on a CPU.

The smoke run goes through every job of the plan, the ensemble evaluation and the report on tiny synthetic data
(with a fake CK+ folder), with wandb and kagglehub made unimportable as they are on the GPU machine. The dry run
checks the full plan's commands. The scheduler's failure handling is checked with stand-in commands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import load_experiment_script

REPO = Path(__file__).resolve().parents[1]
RUN_SH = REPO / "experiments" / "gpu" / "run.sh"
ARMS = ("scratch_cnn", "efficientnet_lite0_random", "efficientnet_lite0_probe", "efficientnet_lite0_staged",
        "efficientnet_lite0")
JOBS = ("vgg_fer", *ARMS, "robust")


plan = load_experiment_script("experiments/gpu/plan.py", "gpu_plan")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", MPLBACKEND="Agg", PYTHON=sys.executable)
    env.pop("CKPLUS_ROOT", None)  # CI sets it for the real-CK+ tests; the plan must not need it
    env.update(extra)
    return env


def _run(out: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN_SH), str(out), *args], capture_output=True, text=True, cwd=REPO,
                          env=env or _env(), timeout=timeout)


def test_sweep_arms_follow_the_sweep_config() -> None:
    assert tuple(plan.sweep_arms()) == ARMS
    assert [job.name for job in plan.planned_jobs()] == list(JOBS)


def test_dry_run_lists_every_planned_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run(out, "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^\[(\w+)\] (.*)$", done.stdout, flags=re.MULTILINE)}
    assert set(lines) == {*JOBS, "ensemble", "report"}
    for name in JOBS:
        command = lines[name]
        assert " -m fer_lightning " in command
        assert "trainer=gpu_bf16" in command and "logger=csv" in command and "callbacks.progress_bar=null" in command
        assert f"hydra.run.dir={out}/runs/{name}" in command
        assert "+trainer.max_time=" in command
        epochs = int(re.search(r"trainer\.max_epochs=(\d+)", command).group(1))
        assert epochs >= (15 if name in ARMS else 1), (name, epochs)
    for arm in ARMS:
        assert f"+experiment={arm} " in lines[arm]
    assert "+experiment=vgg_fer " in lines["vgg_fer"]
    assert "+experiment=cpu_budget model.loss.class_weighted=true model.loss.class_weight_power=0.5 " in lines["robust"]
    assert "model.net_kwargs={widths:[32,64,128,256]}" in lines["robust"]
    assert "-m fer_lightning.evaluate" in lines["ensemble"] and "ckpt_paths=" in lines["ensemble"]
    assert lines["report"].endswith(f"-m fer_lightning.report {out}/runs")
    assert "estimated training makespan" in done.stdout
    assert not out.exists()  # a dry run creates nothing


def test_dry_run_smoke_uses_tiny_synthetic_cpu_runs_and_ckplus(tmp_path: Path) -> None:
    done = _run(tmp_path / "out", "--dry-run", "--smoke")
    assert done.returncode == 0, done.stderr
    jobs = [line for line in done.stdout.splitlines() if line.startswith("[") and " -m fer_lightning " in line]
    assert len(jobs) == len(JOBS)
    for line in jobs:
        for override in ("data=synthetic", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                         "data.num_workers=0", "extra_test=ckplus"):
            assert f" {override} " in line, (override, line)


def test_full_plan_overrides_compose(tmp_path: Path) -> None:
    """Every override of the full plan is a key or option the configs have (what a rename would break), composed
    as the train and evaluate apps compose them; no GPU, data or run needed."""
    from fer_lightning.config import compose_config
    from fer_lightning.evaluation import evaluate  # noqa: F401  (registers the eval config's resolver)

    p = plan.Plan(plan.parse_args([str(tmp_path / "out")]))
    p.ckplus, p.workers = tmp_path / "ck.zip", 3
    for job in p.jobs:
        overrides = [o for o in p.train_command(job, 300)[3:] if not o.startswith("hydra.")]
        cfg = compose_config("train", overrides, tmp_path / job.name)
        assert cfg.trainer.max_epochs == job.epochs and cfg.trainer.max_time == "00:00:05:00"
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
        assert list(cfg.logger) == ["csv"] and cfg.callbacks.progress_bar is None
        assert cfg.callbacks.last_checkpoint is None and cfg.data.num_workers == 3 and cfg.seed == 1
        assert "ckplus" in cfg.extra_test
        assert cfg.experiment_name == {"robust": "cpu_budget"}.get(job.name, job.name)
    robust = compose_config(
        "train", [o for o in p.train_command(p.jobs[-1], 300)[3:] if not o.startswith("hydra.")], tmp_path)
    assert robust.model.loss.class_weight_power == 0.5 and list(robust.model.net_kwargs.widths) == [32, 64, 128, 256]
    overrides = [o for o in p.evaluate_command(["/a/b.ckpt", "/c/d.ckpt"])[3:] if not o.startswith("hydra.")]
    cfg = compose_config("eval", overrides, tmp_path / "eval")
    assert list(cfg.ckpt_paths) == ["/a/b.ckpt", "/c/d.ckpt"] and "ckplus" in cfg.extra_test


def test_hms_and_makespan_and_versions() -> None:
    assert plan.hms(370.9) == "00:00:06:10"
    assert plan.hms(-5) == "00:00:00:00"
    assert plan.lpt_makespan([3, 3, 2, 2, 2], 2) == 7  # LPT: 3+2+2 | 3+2
    assert plan.version_tuple("4.16.0") > plan.version_tuple("4.9.3")
    assert plan.version_tuple("2.0.8.post1") == (2, 0, 8)
    assert plan.hydra_value("/tmp/a-b_c/d.ckpt") == "/tmp/a-b_c/d.ckpt"
    assert plan.hydra_value("/tmp/a b") == "'/tmp/a b'"


def test_wheels_already_installed_are_not_reinstalled(tmp_path: Path) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    (wheels / "pytest-0.1-py3-none-any.whl").write_bytes(b"")  # older than the installed pytest: left alone
    result = plan.install_wheels(wheels, tmp_path / "site")
    assert result["installed"] == [] and result["present"][0].startswith("pytest==")
    assert not (tmp_path / "site").exists()  # pip never ran
    assert plan.install_wheels(tmp_path / "missing", tmp_path / "site")["installed"] == []


def _stand_in_plan(tmp_path: Path, commands: dict[str, list[str]], **options) -> plan.Plan:
    args = plan.parse_args([str(tmp_path / "out"), "--smoke", "--jobs", "3", "--no-install"])
    p = plan.Plan(args)
    (p.out / "logs").mkdir(parents=True)
    p.jobs = [plan.Job(name, [f"+experiment={name}"], 1) for name in commands]
    p.train_command = lambda job, max_time: commands[job.name]  # type: ignore[method-assign]
    for key, value in options.items():
        setattr(p, key, value)
    return p


def test_a_failing_job_does_not_stop_the_others(tmp_path: Path) -> None:
    py = sys.executable
    p = _stand_in_plan(tmp_path, {
        "fails": [py, "-c", "import sys; print('boom'); sys.exit(3)"],
        "ok1": [py, "-c", "import time; time.sleep(0.5)"],
        "ok2": [py, "-c", "pass"],
        "ok3": [py, "-c", "pass"],
    })
    p.run_jobs()
    assert {job.name: (job.status, job.exit_code) for job in p.jobs} == {
        "fails": ("failed", 3), "ok1": ("ok", 0), "ok2": ("ok", 0), "ok3": ("ok", 0)}
    summary = p.summary()
    failed = next(run for run in summary["runs"] if run["name"] == "fails")
    assert "boom" in failed["log_tail"] and failed["exit_code"] == 3
    assert "fails: log tail" in plan.summary_markdown(summary)


def test_a_job_past_the_deadline_is_killed_with_its_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "KILL_GRACE_S", 0.0)
    monkeypatch.setattr(plan, "JOB_OVERHEAD_S", -100.0)  # let it start although the deadline is near
    py = sys.executable
    p = _stand_in_plan(tmp_path, {"hangs": [py, "-c", "import time; time.sleep(120)"]})
    p.train_deadline = time.monotonic() + 1.0
    start = time.monotonic()
    p.run_jobs()
    job = p.jobs[0]
    assert job.status == "killed" and job.exit_code != 0
    assert time.monotonic() - start < 30
    assert any("after the training deadline" in note for note in p.notes)


def test_archive_holds_results_but_no_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"0" * 100)
    (run / "metrics.json").write_text("{}")
    (run / "confusion_matrix.png").write_bytes(b"png")
    (tmp_path / "fake_ckplus" / "anger").mkdir(parents=True)
    (tmp_path / "fake_ckplus" / "anger" / "x.png").write_bytes(b"png")
    with tarfile.open(plan.write_archive(tmp_path)) as tar:
        assert sorted(tar.getnames()) == ["runs/a/confusion_matrix.png", "runs/a/metrics.json"]


# Slow: 139-245 s on the 2-core development VM beside a background training job (7 training processes, an ensemble
# of 7 checkpoints and a report: ~175 CPU-seconds, mostly each process's start-up), so about 100 s on two idle cores.
# test_full_plan_overrides_compose above keeps the plan's commands in step with the configs in `make test`.
@pytest.mark.slow
def test_smoke_run_trains_every_job_then_ensembles_and_reports(tmp_path: Path) -> None:
    """The whole plan on tiny synthetic data, 2 jobs at a time (the concurrent path), on the CPU. wandb and
    kagglehub cannot be imported, as on the GPU machine: logger=csv must need neither."""
    blocked = tmp_path / "blocked"
    for name in ("wandb", "kagglehub"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    out = tmp_path / "out"
    done = _run(out, "--smoke", "--jobs", "2", "--no-install",
                env=_env(PYTHONPATH=os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "smoke" and summary["ckplus"]["available"]
    runs = {run["name"]: run for run in summary["runs"]}
    assert set(runs) == set(JOBS)
    for name, run in runs.items():
        assert run["exit_code"] == 0 and run["status"] == "ok", (name, run.get("log_tail"))
        assert run["val/acc"] is not None and run["test/acc"] is not None, name
        assert run["test/ckplus/acc"] is not None, name  # the fake CK+ folder was scored
        assert (out / run["log"]).is_file() and (out / "runs" / name / "metrics.json").is_file()
    assert runs["robust"]["experiment"] == "cpu_budget"
    assert "model.net_kwargs={widths:[32,64,128,256]}" in runs["robust"]["overrides"]

    ensemble = summary["ensemble"]
    assert ensemble["exit_code"] == 0 and ensemble["num_models"] == len(JOBS)
    metrics = json.loads((out / "ensemble" / "metrics.json").read_text())
    assert metrics["num_models"] == len(JOBS) and "test/ckplus/acc" in metrics and "val/acc" in metrics

    assert summary["report"]["exit_code"] == 0 and (out / "report.md").is_file()
    assert "| robust | cpu_budget | ok | 0 |" in (out / "summary.md").read_text()
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".ckpt")]
    assert "summary.json" in names and "ensemble/metrics.json" in names and "runs/report.md" in names
    assert all(f"runs/{name}/metrics.json" in names and f"logs/{name}.log" in names for name in JOBS)
