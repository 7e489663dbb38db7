"""Run folders: one per launch even when many start at once, one for all processes of a distributed job, and
never shared silently (`claim_run_dir`)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from fer_lightning.config import (
    RUN_ID_ENV,
    RUN_ID_MARKER,
    RunDirTakenError,
    claim_run_dir,
    compose_config,
    current_run_id,
    run_id_from_environment,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ID = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[A-Za-z0-9-]+-\d+"  # start time, host, pid

# What `python -m fer_lightning` would name its run and sweep folders, printed as JSON (compose only: cheap).
SHOW_DIRS = textwrap.dedent("""
    import json, sys
    from hydra.core.hydra_config import HydraConfig
    from fer_lightning.config import compose_config
    cfg = compose_config("train", sys.argv[1:], "unused")
    # One write of one line: torchrun's workers share a stdout, and print's separate newline write let two
    # workers' lines run together.
    sys.stdout.write(json.dumps({"run": HydraConfig.get().run.dir, "sweep": HydraConfig.get().sweep.dir,
                                 "run_id": cfg.run_id}) + "\\n")
    sys.stdout.flush()
""")


def _clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without any launcher's ids (the tests may themselves run under SLURM)."""
    launcher_prefixes = ("SLURM_", "TORCHELASTIC_", "GROUP_WORLD_SIZE", RUN_ID_ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher_prefixes)}
    return {**env, **extra}


def _dirs_of_processes_started_at_once(envs: list[dict[str, str]], overrides: list[str]) -> list[dict[str, str]]:
    processes = [subprocess.Popen([sys.executable, "-c", SHOW_DIRS, *overrides], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for env in envs]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-2000:]
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def test_launches_started_at_once_get_distinct_run_and_sweep_dirs() -> None:
    dirs = _dirs_of_processes_started_at_once([_clean_env()] * 8, ["data=synthetic", "+experiment=compact_cnn"])
    assert len({d["run"] for d in dirs}) == 8 and len({d["sweep"] for d in dirs}) == 8
    for d in dirs:  # sortable by start time first, and the folder name says which run it is
        assert Path(d["run"]).name == f"{d['run_id']}_synthetic_compact_cnn"
        assert Path(d["sweep"]).name == d["run_id"]
        assert re.fullmatch(LAUNCH_ID, d["run_id"]), d["run_id"]


def test_ranks_of_one_slurm_job_share_its_dir_and_other_jobs_do_not() -> None:
    def rank(job: dict[str, str], procid: int) -> dict[str, str]:
        return _clean_env(SLURM_JOB_NAME="fer_train", SLURM_NTASKS="2", SLURM_PROCID=str(procid),
                          SLURM_LOCALID=str(procid), **job)

    job = {"SLURM_JOB_ID": "4242"}
    array_task = {"SLURM_JOB_ID": "5000", "SLURM_ARRAY_JOB_ID": "4990", "SLURM_ARRAY_TASK_ID": "3"}
    dirs = _dirs_of_processes_started_at_once([rank(job, 0), rank(job, 1), rank(array_task, 0), rank(array_task, 1)],
                                              ["data=synthetic"])
    assert [Path(d["run"]).name for d in dirs] == ["slurm-4242_synthetic_scratch_cnn"] * 2 + [
        "slurm-4990_3_synthetic_scratch_cnn"] * 2
    assert dirs[0]["sweep"] == dirs[1]["sweep"] != dirs[2]["sweep"] == dirs[3]["sweep"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("standalone", [False, True], ids=["default_run_id_none", "standalone"])
def test_torchrun_workers_share_one_dir(standalone: bool, tmp_path: Path) -> None:
    """torchrun's default rendezvous id is `none` for every launch: the workers agree through their agent."""
    script = tmp_path / "show_dirs.py"
    script.write_text(SHOW_DIRS)
    launches = []
    for _ in range(2):
        rendezvous = "--standalone" if standalone else f"--master-port={_free_port()}"
        launches.append(subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", rendezvous, str(script)],
            cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=180))
    ids_per_launch = []
    for launch in launches:
        assert launch.returncode == 0, launch.stderr[-3000:]
        workers = [json.loads(line) for line in launch.stdout.splitlines() if line.startswith("{")]
        assert len(workers) == 2 and workers[0] == workers[1]
        ids_per_launch.append(workers[0]["run_id"])
    assert ids_per_launch[0] != ids_per_launch[1]
    assert all(re.fullmatch(LAUNCH_ID, run_id) for run_id in ids_per_launch), ids_per_launch


STARTED = datetime(2025, 1, 2, 3, 4, 5)


@pytest.mark.parametrize("env,expected", [
    ({RUN_ID_ENV: "resnet-long.1", "SLURM_JOB_ID": "7", "TORCHELASTIC_RUN_ID": "x"}, "resnet-long.1"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "fer_train", "SLURM_PROCID": "3"}, "slurm-7"),
    ({"SLURM_JOB_ID": "7", "SLURM_ARRAY_JOB_ID": "6", "SLURM_ARRAY_TASK_ID": "12"}, "slurm-6_12"),
    # interactive allocations run many trainings under one job id: each is its own launch
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "bash"}, "2025-01-02_03-04-05_gpu-node-042-99"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "interactive"}, "2025-01-02_03-04-05_gpu-node-042-99"),
    # torchrun whose parent is no torchrun agent (here: pytest): `none` names nothing, so this launch's own id
    ({"TORCHELASTIC_RUN_ID": "none", "GROUP_WORLD_SIZE": "1"}, "2025-01-02_03-04-05_gpu-node-042-99"),
    ({"TORCHELASTIC_RUN_ID": "exp/1", "GROUP_WORLD_SIZE": "2"}, "torchrun-exp-1"),
    ({"TORCHELASTIC_RUN_ID": "none", "GROUP_WORLD_SIZE": "2"}, "2025-01-02_03-04-05_gpu-node-042-99"),
    ({}, "2025-01-02_03-04-05_gpu-node-042-99"),
], ids=["explicit_wins", "slurm_job", "slurm_array_task", "slurm_bash", "slurm_interactive", "torchrun_none",
        "torchrun_multinode", "torchrun_multinode_none", "plain"])
def test_run_id_rules(env: dict[str, str], expected: str) -> None:
    run_id = run_id_from_environment(env, now=STARTED, host="gpu-node-042.cluster.example.org", pid=99,
                                     parent_pid=os.getpid())
    assert run_id == expected


def test_an_explicit_run_id_must_be_a_plain_folder_name() -> None:
    with pytest.raises(ValueError, match=RUN_ID_ENV):
        run_id_from_environment({RUN_ID_ENV: "../elsewhere"})


def test_the_run_id_is_fixed_within_a_process(tmp_path: Path) -> None:
    first = compose_config("train", ["data=synthetic"], tmp_path).run_id
    time.sleep(1.1)  # a second later, a fresh config: a run id computed again would differ
    second = compose_config("train", ["data=synthetic"], tmp_path).run_id
    assert first == second == current_run_id()


HYDRA_APP = textwrap.dedent("""
    import json, time
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd
    import fer_lightning  # noqa: F401

    @hydra.main(version_base="1.3", config_path=%r, config_name="train")
    def main(cfg) -> None:
        time.sleep(1.1)  # a second later: a run id computed again would name another folder
        command, _ = _hydra_subprocess_cmd(local_rank=1)
        run_dir = [arg for arg in command if arg.startswith("hydra.run.dir=")][0]
        print(json.dumps({"child_run_dir": run_dir.split("=", 1)[1].strip('"'), "run_id": cfg.run_id,
                          "output_dir": HydraConfig.get().runtime.output_dir}))

    main()
""")


def test_lightnings_ddp_children_are_sent_the_folder_rank_0_writes_to(tmp_path: Path) -> None:
    """Lightning re-runs the script for ranks 1..n-1 with `hydra.run.dir=<the run dir>`: it must be this run's."""
    app = tmp_path / "app.py"
    app.write_text(HYDRA_APP % str(ROOT / "conf"))
    result = subprocess.run([sys.executable, str(app), "data=synthetic", f"paths.log_dir={tmp_path / 'logs'}"],
                            cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["child_run_dir"] == seen["output_dir"]
    assert Path(seen["output_dir"]).is_dir() and Path(seen["output_dir"]).name.startswith(seen["run_id"])


def test_claim_run_dir_accepts_its_own_run_again_and_refuses_another(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "shared"
    claim_run_dir(run_dir, "run-a")
    claim_run_dir(run_dir, "run-a")  # a requeued job or a restarted worker: the same run
    with pytest.raises(RunDirTakenError) as refused:
        claim_run_dir(run_dir, "run-b")
    message = str(refused.value)
    assert str(run_dir) in message and "'run-a'" in message and "'run-b'" in message
    assert f"{RUN_ID_ENV}=run-a" in message  # how to continue that run in place, on purpose
    assert json.loads((run_dir / RUN_ID_MARKER).read_text())["run_id"] == "run-a"


CLAIM = textwrap.dedent("""
    import sys, time
    from fer_lightning.config import RunDirTakenError, claim_run_dir
    start_at = float(sys.argv[3])
    while time.time() < start_at:  # every process past its imports, then all claim together
        time.sleep(0.001)
    try:
        claim_run_dir(sys.argv[1], sys.argv[2])
        print("claimed")
    except RunDirTakenError:
        print("refused")
""")


def test_exactly_one_of_racing_launches_claims_a_folder(tmp_path: Path) -> None:

    run_dir, start_at = tmp_path / "contested", time.time() + 3.0
    processes = [subprocess.Popen([sys.executable, "-c", CLAIM, str(run_dir), f"run-{i}", str(start_at)], cwd=ROOT,
                                  env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(8)]
    outcomes = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err[-500:] for _, err in outcomes]
    results = [out.strip() for out, _ in outcomes]
    assert sorted(results) == ["claimed"] + ["refused"] * 7
    winner = f"run-{results.index('claimed')}"
    assert json.loads((run_dir / RUN_ID_MARKER).read_text())["run_id"] == winner


SIGNAL_AT_STEP = textwrap.dedent("""
    import os, signal
    from lightning.pytorch import Callback

    class SignalAtStep(Callback):
        # SLURM sends the signal `--signal=USR1@<s>` asks for, s seconds before the time limit
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGUSR1)
""")


def test_a_requeued_slurm_job_resumes_in_its_own_folder(tmp_path: Path) -> None:
    """What conf/launcher/slurm.yaml relies on: at SIGUSR1 Lightning saves hpc_ckpt_1.ckpt in the run folder and
    requeues; the requeued job (same SLURM job id) composes the same folder, so Lightning resumes from it."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    scontrol = stubs / "scontrol"  # records the requeue, then ends the job as SLURM would (SIGKILL)
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol_calls"}\nkill -9 $PPID\n')
    scontrol.chmod(0o755)
    (tmp_path / "signal_at_step.py").write_text(SIGNAL_AT_STEP)
    env = _clean_env(PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(tmp_path),
                     SLURM_JOB_ID="4242", SLURM_JOB_NAME="fer_train", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1",
                     SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NODELIST="localhost",
                     FER_LIGHTNING_CACHE=str(tmp_path / "cache"), WANDB_MODE="offline")
    overrides = ["data=synthetic", "data.num_train=56", "data.num_val=28", "data.num_test=28", "data.batch_size=8",
                 "data.eval_batch_size=8", "+experiment=compact_cnn", "trainer.max_epochs=2",
                 "trainer.accelerator=cpu", "logger=none", "callbacks.progress_bar=null",
                 f"paths.log_dir={tmp_path / 'logs'}"]

    def launch(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fer_lightning", *overrides, *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    first = launch("+callbacks.requeue_signal={_target_:signal_at_step.SignalAtStep,step:3}")
    assert first.returncode != 0, "the stub scontrol should have ended the job"
    assert (tmp_path / "scontrol_calls").read_text().split() == ["requeue", "4242"], first.stderr[-3000:]
    run_dir = tmp_path / "logs" / "train" / "runs" / "slurm-4242_synthetic_compact_cnn"
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file(), first.stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()

    second = launch()  # the requeued job: same job id, same command
    assert second.returncode == 0, second.stderr[-3000:]
    # Lightning's lines now go through Hydra's console handler (stdout), once
    restored = f"Restoring states from the checkpoint path at {run_dir / 'hpc_ckpt_1.ckpt'}"
    assert restored in second.stdout + second.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 14 and metrics["epochs"] == 2  # 7 batches x 2 epochs, counted across both
    assert [p.name for p in (tmp_path / "logs" / "train" / "runs").iterdir()] == [run_dir.name]
