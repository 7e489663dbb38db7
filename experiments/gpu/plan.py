"""The one-GPU plan: every job, concurrently, within a wall-time budget; then an ensemble, a report and a summary.

`bash experiments/gpu/run.sh OUT_DIR [--smoke] [--dry-run]` runs this file (see experiments/gpu/README.md).

Written for a borrowed machine (one H200, 16 cores, no internet, a fixed lease), so it:
- uses only the standard library until the wheels carried in `.whl/` are installed (hydra-core, albumentations,
  ... are not on that machine), and installs only what is missing or older there;
- runs each training job as its own process (not a Hydra multirun), several at a time, so small models share the
  GPU and the 16 cores; a failing job never stops the others, its exit code and log tail go into the summary;
- gives every job `trainer.max_time` = the time left before the training deadline, so a job that runs slower than
  estimated stops training early but still selects, tests and writes metrics.json; a job that hangs is killed at the
  deadline (its process group only);
- writes everything worth keeping as small top-level files (summary.json, summary.md, report.md, results.tar.gz),
  because the device tool returns at most 8 files, 2 folders deep; checkpoints stay out of the archive.

`--smoke` runs the same plan (every job, the ensemble and the report) on tiny synthetic data on a CPU, with a
fake CK+ folder, in a couple of minutes: what tests/test_gpu_script.py runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SITE_DIR = Path("/tmp/site")  # where the carried wheels go (pip --target), put first on PYTHONPATH
SWEEP_FILE = REPO / "conf" / "sweep" / "scratch_vs_transfer.yaml"

# Full mode. Epoch budgets that fit the 8-minute wall-time budget with 4 jobs at a time on one H200 (estimates,
# see README.md "How it fits"): the sweep arms at 15 epochs (the sweep's own 30 do not fit beside the rest),
# vgg_fer at 30 of its 60 (its cosine schedule follows trainer.max_epochs, so it still anneals to 0), the robust
# compact CNN at 30 of its 60 (its loader, the robust augmentation, is the slowest per face).
SWEEP_EPOCHS = 15
VGG_EPOCHS = 30
ROBUST_EPOCHS = 30
FULL_BUDGET_S = 480.0
# Kept back from the budget for what follows training: the ensemble evaluation, the report, the archive.
POST_RESERVE_S = 70.0
# A job's time outside trainer.max_time: start-up before fit (imports, data, model) and selection + test + CK+
# after it. max_time = time left before the training deadline minus this.
JOB_OVERHEAD_S = 40.0
# A job still running this long after the training deadline is killed (max_time should have stopped it).
KILL_GRACE_S = 45.0
# Estimated seconds per epoch on the H200 with 3 loader workers per job and 4 jobs sharing the GPU, plus start-up
# and test. Not measured (no GPU was lent when this was written): used to launch the longest jobs first and to
# print the expected makespan in --dry-run. The reasoning is in README.md.
EST_EPOCH_S = {
    "vgg_fer": 5.5,
    "robust": 7.0,
    "scratch_cnn": 4.0,
    "efficientnet_lite0": 8.0,
    "efficientnet_lite0_random": 8.0,
    "efficientnet_lite0_staged": 7.5,
    "efficientnet_lite0_probe": 4.5,
}
EST_JOB_OVERHEAD_S = 25.0

# Smoke mode: tiny synthetic data, 2 training batches, no GPU, no download.
SMOKE_DATA = ["data=synthetic", "data.num_train=64", "data.num_val=32", "data.num_test=32"]
SMOKE_TRAINER = ["trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.num_workers=0"]
SMOKE_BUDGET_S = 1800.0  # generous: the smoke run checks the plan, not the speed


@dataclass
class Job:
    """One training run of the plan."""

    name: str
    experiment_overrides: list[str]  # what makes this job this job (experiment, transforms)
    epochs: int  # trainer.max_epochs in full mode (smoke: 1)
    estimate_s: float = 0.0  # full-mode wall-time estimate, for longest-first launching
    # filled in while running
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    status: str = "pending"  # pending | running | ok | failed | killed | skipped
    wall_s: float | None = None
    max_time_s: int | None = None
    started: float | None = None
    process: subprocess.Popen | None = None
    log_handle: Any = None


def sweep_arms() -> list[str]:
    """The five arms of `+sweep=scratch_vs_transfer`, read from the sweep file so the plan follows it.

    A plain regex (no YAML library: this runs before the carried wheels are installed)."""
    match = re.search(r"^\s*\+experiment:\s*(\S+)\s*$", SWEEP_FILE.read_text(), flags=re.MULTILINE)
    if not match:
        raise SystemExit(f"error: no '+experiment:' sweep line in {SWEEP_FILE}")
    return match.group(1).split(",")


ROBUST_RECIPE = ["model.loss.class_weighted=true", "model.loss.class_weight_power=0.5",
                 "model.net_kwargs={widths:[32,64,128,256]}"]


def planned_jobs() -> list[Job]:
    jobs = [Job("vgg_fer", ["+experiment=vgg_fer"], VGG_EPOCHS)]
    jobs += [Job(arm, [f"+experiment={arm}"], SWEEP_EPOCHS) for arm in sweep_arms()]
    # The best robust recipe (experiments/cross_dataset: square-root class weights, +7.6 points on CK+ dev at no
    # PublicTest cost in 15 epochs; transforms=robust lost at that budget) at a larger size: the compact CNN twice as
    # wide in every stage (0.29M -> 1.1M parameters, model.net_kwargs).
    jobs.append(Job("robust", ["+experiment=cpu_budget", *ROBUST_RECIPE], ROBUST_EPOCHS))
    for job in jobs:
        job.estimate_s = EST_EPOCH_S.get(job.name, 8.0) * job.epochs + EST_JOB_OVERHEAD_S
    return jobs


def lpt_makespan(estimates: list[float], slots: int) -> float:
    """Finish time of longest-first list scheduling on `slots` parallel slots (how the jobs are launched)."""
    free = [0.0] * max(1, slots)
    for estimate in sorted(estimates, reverse=True):
        i = free.index(min(free))
        free[i] += estimate
    return max(free)


def hydra_value(value: str) -> str:
    """A value as a Hydra override writes it: quoted unless it is a plain path-like word."""
    if re.fullmatch(r"[A-Za-z0-9_./:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hms(seconds: float) -> str:
    """trainer.max_time's DD:HH:MM:SS."""
    s = max(0, int(seconds))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading integers of a version string, enough to tell an older installed release from the carried one."""
    parts = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def install_wheels(wheel_dir: Path, target: Path) -> dict[str, Any]:
    """pip-install the carried wheels that this interpreter lacks, or has in an older version, into `target`.

    Only those: a package the machine already has in that version or newer is left alone (its build matches the
    machine's numpy and CUDA). `--no-index --no-deps`: there is no internet there, and the wheel set is complete.
    """
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if not wheels:
        return {"wheel_dir": str(wheel_dir), "installed": [], "present": [], "note": "no .whl folder or no wheels"}
    if target.is_dir():
        sys.path.insert(0, str(target))  # a warm machine may have them from an earlier call
        importlib.invalidate_caches()
    todo, present = [], []
    for wheel in wheels:
        dist, version = wheel.name.split("-")[:2]
        try:
            have = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have is not None and version_tuple(have) >= version_tuple(version):
            present.append(f"{dist}=={have}")
        else:
            todo.append(wheel)
    result: dict[str, Any] = {"wheel_dir": str(wheel_dir), "present": present,
                              "installed": [w.name.split("-")[0] + "==" + w.name.split("-")[1] for w in todo]}
    if todo:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                   "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, todo)]
        done = subprocess.run(command, capture_output=True, text=True)
        result["pip_exit_code"] = done.returncode
        if done.returncode != 0:
            result["pip_output"] = (done.stdout + done.stderr)[-3000:]
        if str(target) not in sys.path:
            sys.path.insert(0, str(target))
    return result


def make_fake_ckplus(root: Path) -> Path:
    """A CK+-like folder for smoke runs: drawn faces in `anger/`, `happy/` and `contempt/` (CK+'s own folder names,
    so the label map, including the dropped contempt class, is exercised)."""
    import cv2
    import numpy as np

    from fer_lightning.data.synthetic import draw_face
    from fer_lightning.labels import EMOTION_TO_ID

    rng = np.random.default_rng(0)
    for folder, label in (("anger", "angry"), ("happy", "happy"), ("contempt", "neutral")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            face = draw_face(EMOTION_TO_ID[label], rng, size=64)  # not 48: CK+ faces get resized too
            cv2.imwrite(str(root / folder / f"S{i:03d}_{folder}.png"), face)
    return root


class Plan:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.smoke: bool = args.smoke
        self.out = Path(args.out_dir).resolve()
        self.python = sys.executable
        self.t0 = time.monotonic()
        self.budget_s = args.budget_s if args.budget_s is not None else (SMOKE_BUDGET_S if self.smoke
                                                                         else FULL_BUDGET_S)
        self.train_deadline = self.t0 + self.budget_s - (0.0 if self.smoke else POST_RESERVE_S)
        cores = os.cpu_count() or 1
        self.concurrency = args.jobs or (1 if self.smoke else 4)
        # Loader workers: every job gets an equal share of the cores left after one core per training process
        # (16 cores, 4 jobs: 3 each). The augmentation, not the GPU, is what these small models wait for, so the
        # share is larger than data.num_workers=auto's 8 per machine split four ways would be.
        self.workers = 0 if self.smoke else (args.workers if args.workers is not None
                                             else max(1, (cores - self.concurrency) // self.concurrency))
        self.threads = max(1, cores // self.concurrency)
        self.jobs = planned_jobs()
        self.notes: list[str] = []
        self.env = dict(os.environ)
        self.fer_root = Path(os.environ.get("FER2013_ROOT") or REPO / "data" / "fer2013.zip")
        ck = os.environ.get("CKPLUS_ROOT")
        self.ckplus: Path | None = Path(ck) if ck else REPO / "data" / "ckplus48_dev.zip"
        self.ckplus_note = "not checked: the plan stopped before"
        self.install: dict[str, Any] = {}
        self.gpu: str | None = None
        self.ensemble: dict[str, Any] = {"status": "not run"}
        self.report: dict[str, Any] = {"status": "not run"}

    # ----- configuration of every command -----

    def data_overrides(self) -> list[str]:
        return list(SMOKE_DATA) if self.smoke else [f"data.root={hydra_value(str(self.fer_root.resolve()))}"]

    def extra_test(self) -> list[str]:
        return ["extra_test=ckplus"] if self.ckplus is not None else []

    def train_command(self, job: Job, max_time_s: float) -> list[str]:
        common = ["logger=csv", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
                  # last.ckpt after every epoch is for resuming, and nobody resumes on a machine that is given
                  # back: it would write vgg_fer's ~0.4 GB (weights, momentum, EMA) once per epoch for nothing
                  "callbacks.last_checkpoint=null", "seed=1"]
        if self.smoke:
            trainer = list(SMOKE_TRAINER)
        else:
            trainer = ["trainer=gpu_bf16", f"trainer.max_epochs={job.epochs}", f"data.num_workers={self.workers}"]
        return [self.python, "-m", "fer_lightning", *job.experiment_overrides, *self.data_overrides(), *trainer,
                *self.extra_test(), *common, f"+trainer.max_time={hms(max_time_s)}",
                f"hydra.run.dir={hydra_value(str(self.out / 'runs' / job.name))}"]

    def evaluate_command(self, ckpts: list[str]) -> list[str]:
        # quoted one by one: a list element is parsed by Hydra's grammar, which a path may trip
        paths = "[" + ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in ckpts) + "]"
        device = ["device=cpu"] if self.smoke else []
        return [self.python, "-m", "fer_lightning.evaluate", f"ckpt_paths={paths}", *self.data_overrides(),
                *self.extra_test(), *device, f"hydra.run.dir={hydra_value(str(self.out / 'ensemble'))}"]

    def report_command(self) -> list[str]:
        return [self.python, "-m", "fer_lightning.report", str(self.out / "runs")]

    def max_time_for(self, now: float) -> float:
        return self.train_deadline - now - JOB_OVERHEAD_S

    # ----- set-up -----

    def setup_environment(self) -> None:
        if not self.args.no_install:
            self.install = install_wheels(REPO / ".whl", SITE_DIR)
            if self.install.get("pip_exit_code"):
                raise SystemExit("error: installing the carried wheels failed:\n" + self.install["pip_output"])
        # The project itself by PYTHONPATH (no pip, no build backend, no internet); the carried wheels first.
        carried = not self.args.no_install and any((REPO / ".whl").glob("*.whl"))
        paths = [str(SITE_DIR)] if carried and SITE_DIR.is_dir() else []  # also when an earlier call filled it
        paths += [str(REPO)] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self.env.setdefault("WANDB_MODE", "disabled")  # logger=csv; W&B is not installed there anyway
        self.env["PYTHONUNBUFFERED"] = "1"  # log tails that end where the job ended
        self.env["HYDRA_FULL_ERROR"] = "1"  # a failing job's log holds the traceback, not one line
        if not self.smoke:
            # torch's own CPU threads per training process: the GPU does the maths, the loaders have their cores
            self.env.setdefault("OMP_NUM_THREADS", str(self.threads))
        for p in paths:
            if p not in sys.path:
                sys.path.insert(0, p)

    def setup_data(self) -> None:
        if self.smoke:
            self.ckplus = make_fake_ckplus(self.out / "fake_ckplus")
            self.ckplus_note = "fake CK+ folder of drawn faces (smoke run)"
        elif not self.fer_root.exists():
            raise SystemExit(f"error: FER2013 not found at {self.fer_root} (set FER2013_ROOT, or put fer2013.zip in "
                             "data/ of the repo: README.md of experiments/gpu says how it gets to the GPU machine)")
        if not self.smoke:
            self.env["FER2013_ROOT"] = str(self.fer_root.resolve())
            if self.ckplus is not None and self.ckplus.exists():
                self.ckplus_note = f"CK+ dev from {self.ckplus.resolve()}"
            else:
                self.ckplus_note = (f"CK+ not found ({self.ckplus}; set CKPLUS_ROOT): runs without extra_test=ckplus, "
                                    "so there is no test/ckplus/acc")
                self.ckplus = None
        if self.ckplus is not None:
            self.env["CKPLUS_ROOT"] = str(self.ckplus.resolve())

    def check_gpu(self) -> None:
        """Full mode needs CUDA: without it, the budgeted epochs would take hours. Fail in seconds instead."""
        probe = subprocess.run([self.python, "-c", "import torch; print(torch.cuda.get_device_name(0) "
                                "if torch.cuda.is_available() else '')"], capture_output=True, text=True,
                               env=self.env, timeout=120)
        self.gpu = probe.stdout.strip() or None
        if not self.gpu:
            raise SystemExit("error: no CUDA GPU visible to torch; full mode is for the GPU machine (use --smoke "
                             f"on a CPU).\n{probe.stderr[-2000:]}")

    def prewarm_cache(self) -> None:
        """Decode FER2013 into the .npz cache once, before the jobs start: seven jobs decoding the same 35,887 PNGs
        at the same moment would each spend the ~20 s that one decode takes, on the cores their loaders need."""
        start = time.monotonic()
        code = ("from fer_lightning.data.datamodule import load_fer2013; import sys; "
                "print(len(load_fer2013(sys.argv[1]).images))")
        done = subprocess.run([self.python, "-c", code, str(self.fer_root.resolve())], capture_output=True,
                              text=True, env=self.env, cwd=REPO, timeout=300)
        seconds = time.monotonic() - start
        if done.returncode == 0:
            self.notes.append(f"FER2013 decode cache ready in {seconds:.0f} s ({done.stdout.strip()} faces)")
        else:  # not fatal: each job decodes for itself and reports what is wrong in its own log
            self.notes.append(f"cache pre-warm failed (exit {done.returncode}), jobs decode for themselves: "
                              + done.stderr.strip()[-500:])

    # ----- running -----

    def launch(self, job: Job) -> None:
        now = time.monotonic()
        max_time = self.max_time_for(now)
        if max_time < 30:
            job.status, job.exit_code = "skipped", None
            self.notes.append(f"{job.name}: skipped, {max(0.0, max_time):.0f} s of training time left")
            return
        job.max_time_s = int(max_time)
        job.command = self.train_command(job, max_time)
        log_path = self.out / "logs" / f"{job.name}.log"
        job.log_handle = log_path.open("w")
        job.log_handle.write("$ " + shlex.join(job.command) + "\n")
        job.log_handle.flush()
        # A session of its own, so that a job and its loader workers can be stopped together, and only they.
        job.process = subprocess.Popen(job.command, stdout=job.log_handle, stderr=subprocess.STDOUT, env=self.env,
                                       cwd=REPO, start_new_session=True)
        job.started, job.status = now, "running"
        print(f"[{self.elapsed():6.1f} s] start {job.name} (max_time {hms(max_time)})", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stop(self, job: Job, why: str) -> None:
        """SIGINT first (Lightning saves interrupted.ckpt and the run exits), then SIGKILL: the job's group only."""
        assert job.process is not None
        for sig, wait_s in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(job.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                job.process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        job.status = "killed"
        self.notes.append(f"{job.name}: {why}")

    def finish(self, job: Job) -> None:
        assert job.process is not None and job.started is not None
        job.exit_code = job.process.returncode
        job.wall_s = time.monotonic() - job.started
        if job.status != "killed":
            job.status = "ok" if job.exit_code == 0 else "failed"
        job.log_handle.close()
        print(f"[{self.elapsed():6.1f} s] {job.status} {job.name} (exit {job.exit_code}, {job.wall_s:.0f} s)",
              flush=True)

    def run_jobs(self) -> None:
        pending = sorted(self.jobs, key=lambda j: -j.estimate_s)  # longest first: the shortest makespan
        running: list[Job] = []
        try:
            while pending or running:
                while pending and len(running) < self.concurrency:
                    job = pending.pop(0)
                    self.launch(job)
                    if job.status == "running":
                        running.append(job)
                time.sleep(0.5)
                for job in list(running):
                    assert job.process is not None
                    if job.process.poll() is None and time.monotonic() > self.train_deadline + KILL_GRACE_S:
                        self.stop(job, f"still running {KILL_GRACE_S:.0f} s after the training deadline; killed")
                    if job.process.poll() is not None:
                        self.finish(job)
                        running.remove(job)
        finally:  # Ctrl-C or an error here: no job outlives the plan
            for job in running:
                if job.process is not None and job.process.poll() is None:
                    self.stop(job, "stopped: the plan itself was interrupted")
                    self.finish(job)

    def run_step(self, name: str, command: list[str], timeout_s: float) -> dict[str, Any]:
        log_path = self.out / "logs" / f"{name}.log"
        start = time.monotonic()
        with log_path.open("w") as log:
            log.write("$ " + shlex.join(command) + "\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=max(10.0, timeout_s))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
        step = {"command": command, "exit_code": code, "wall_s": round(time.monotonic() - start, 1),
                "log": str(log_path.relative_to(self.out))}
        if code != 0:
            step["log_tail"] = tail(log_path)
        print(f"[{self.elapsed():6.1f} s] {name}: exit {code}", flush=True)
        return step

    def run_ensemble(self) -> None:
        ckpts = []
        for job in self.jobs:
            metrics = read_json(self.out / "runs" / job.name / "metrics.json")
            path = metrics.get("best_ckpt_path")
            if job.status == "ok" and path and Path(path).is_file():
                ckpts.append(path)
        if not ckpts:
            self.ensemble = {"status": "skipped: no run left a selected checkpoint"}
            return
        left = self.t0 + self.budget_s - time.monotonic()
        step = self.run_step("ensemble", self.evaluate_command(ckpts), timeout_s=min(240.0, max(60.0, left)))
        metrics = read_json(self.out / "ensemble" / "metrics.json")
        step["members"] = [Path(p).parent.parent.name for p in ckpts]
        step["status"] = "ok" if step["exit_code"] == 0 else "failed"
        for key in ("val/acc", "test/acc", "test/ckplus/acc", "val/f1_macro", "test/f1_macro", "num_models"):
            if key in metrics:
                step[key] = metrics[key]
        self.ensemble = step

    def run_report(self) -> None:
        step = self.run_step("report", self.report_command(), timeout_s=180.0)
        report = self.out / "runs" / "report.md"
        if report.is_file():
            (self.out / "report.md").write_text(report.read_text())
        step["status"] = "ok" if step["exit_code"] == 0 and report.is_file() else "failed"
        self.report = step

    # ----- results -----

    def job_summary(self, job: Job) -> dict[str, Any]:
        run_dir = self.out / "runs" / job.name
        metrics = read_json(run_dir / "metrics.json")
        log_path = self.out / "logs" / f"{job.name}.log"
        planned = 1 if self.smoke else job.epochs
        entry: dict[str, Any] = {
            "name": job.name,
            "experiment": metrics.get("experiment") or job.experiment_overrides[0].split("=", 1)[1],
            "overrides": job.command[3:] if job.command else [],
            "command": shlex.join(job.command) if job.command else None,
            "status": job.status,
            "exit_code": job.exit_code,
            "wall_s": round(job.wall_s, 1) if job.wall_s is not None else None,
            "train_time_s": metrics.get("train_time_s"),
            "val/acc": metrics.get("val/acc"),
            "val/acc_best": metrics.get("val/acc_best"),
            "test/acc": metrics.get("test/acc"),
            "test/ckplus/acc": metrics.get("test/ckplus/acc"),
            "epochs_planned": planned,
            "epochs_run": metrics.get("epochs"),
            "max_time_s": job.max_time_s,
            "stopped_by_time_limit": time_limit_hit(log_path, run_dir / "train.log"),
            "estimate_s": None if self.smoke else round(job.estimate_s),
            "best_ckpt_path": metrics.get("best_ckpt_path"),
            "run_dir": str(run_dir.relative_to(self.out)),
            "log": str(log_path.relative_to(self.out)),
        }
        if job.status not in ("ok", "pending", "skipped"):
            entry["log_tail"] = tail(log_path)
        return entry

    def summary(self) -> dict[str, Any]:
        return {
            "mode": "smoke" if self.smoke else "full",
            "gpu": self.gpu,
            "wall_s": round(self.elapsed(), 1),
            "budget_s": self.budget_s,
            "concurrency": self.concurrency,
            "loader_workers_per_job": self.workers,
            "cpu_count": os.cpu_count(),
            "fer2013": "synthetic (smoke run)" if self.smoke else str(self.fer_root),
            "ckplus": {"available": self.ckplus is not None, "note": self.ckplus_note},
            "install": self.install,
            "runs": [self.job_summary(job) for job in self.jobs],
            "ensemble": self.ensemble,
            "report": self.report,
            "notes": self.notes,
        }

    def write_outputs(self) -> dict[str, Any]:
        summary = self.summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (self.out / "summary.md").write_text(summary_markdown(summary))
        write_archive(self.out)
        return summary


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def time_limit_hit(*logs: Path) -> bool:
    """Lightning's Timer says so when trainer.max_time ended training before max_epochs."""
    for path in logs:
        try:
            if "Time limit reached" in path.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def _num(value: Any, fmt: str = "{:.0f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# GPU plan: {summary['mode']} run", ""]
    if summary["mode"] == "smoke":
        lines += ["SMOKE RUN on synthetic faces, 2 training batches: the numbers below test the plumbing, "
                  "they are not results.", ""]
    lines += [f"GPU: {summary['gpu'] or 'none'}; {summary['concurrency']} jobs at a time, "
              f"{summary['loader_workers_per_job']} loader workers each, {summary['cpu_count']} cores; "
              f"wall time {summary['wall_s']:.0f} s of a {summary['budget_s']:.0f} s budget.",
              f"CK+: {summary['ckplus']['note']}", "",
              "| job | experiment | status | exit | epochs run/planned | val/acc % | test/acc % | CK+ acc % "
              "| train s | wall s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in summary["runs"]:
        epochs = f"{_num(run['epochs_run'])}/{run['epochs_planned']}"
        if run["stopped_by_time_limit"]:
            epochs += " (time limit)"
        lines.append(f"| {run['name']} | {run['experiment']} | {run['status']} | {_num(run['exit_code'])} | "
                     f"{epochs} | {_pct(run['val/acc'])} | {_pct(run['test/acc'])} | "
                     f"{_pct(run['test/ckplus/acc'])} | {_num(run['train_time_s'])} | {_num(run['wall_s'])} |")
    ens = summary["ensemble"]
    if "exit_code" in ens:
        members = ", ".join(ens.get("members", []))
        lines.append(f"| ensemble ({ens.get('num_models', len(ens.get('members', [])))} models) | {members} | "
                     f"{ens['status']} | {ens['exit_code']} | - | {_pct(ens.get('val/acc'))} | "
                     f"{_pct(ens.get('test/acc'))} | {_pct(ens.get('test/ckplus/acc'))} | - | "
                     f"{_num(ens.get('wall_s'))} |")
    else:
        lines.append(f"\nEnsemble: {ens['status']}")
    lines += ["", "val = PublicTest (selects the epoch), test = PrivateTest (reported only). "
              "The ensemble averages the members' softmax probabilities; nothing in it was chosen on test.",
              f"Report: report.md ({summary['report'].get('status')}). Everything small: results.tar.gz.", ""]
    if summary["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in summary["notes"]] + [""]
    failed = [run for run in summary["runs"] if run.get("log_tail")]
    failed += [dict(name=name, log_tail=summary[name]["log_tail"]) for name in ("ensemble", "report")
               if summary[name].get("log_tail")]
    for run in failed:
        lines += [f"## {run['name']}: log tail", "", "```", run["log_tail"], "```", ""]
    return "\n".join(lines)


ARCHIVE_SUFFIXES = (".json", ".md", ".png", ".log", ".yaml", ".csv", ".npy", ".txt")


def write_archive(out: Path) -> Path:
    """results.tar.gz: metrics, reports, confusion matrices, configs, curves and logs of every step; never a
    checkpoint (hundreds of MB), nor the smoke run's fake CK+ faces."""
    archive = out / "results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            rel = path.relative_to(out)
            if (not path.is_file() or path == archive or rel.parts[0] == "fake_ckplus"
                    or path.suffix not in ARCHIVE_SUFFIXES or path.stat().st_size > 20_000_000):
                continue
            tar.add(path, arcname=str(rel))
    return archive


def dry_run(plan: Plan) -> None:
    print(f"# {'smoke' if plan.smoke else 'full'} plan: {len(plan.jobs)} training jobs, {plan.concurrency} at a "
          f"time, {plan.workers} loader workers each ({os.cpu_count()} cores here), longest first; "
          f"budget {plan.budget_s:.0f} s")
    for job in sorted(plan.jobs, key=lambda j: -j.estimate_s):
        est = "" if plan.smoke else f"   # est. {job.estimate_s:.0f} s"
        print(f"[{job.name}] {shlex.join(plan.train_command(job, plan.max_time_for(plan.t0)))}{est}")
    if not plan.smoke and not plan.fer_root.exists():
        print(f"# note: FER2013 is not at {plan.fer_root} here (FER2013_ROOT); a real run would stop at once")
    if not plan.smoke and plan.ckplus is None:
        print("# note: no CK+ here (CKPLUS_ROOT, data/ckplus48_dev.zip): the runs would go without extra_test")
    print(f"[ensemble] {shlex.join(plan.evaluate_command(['<selected checkpoint of each run>']))}")
    print(f"[report] {shlex.join(plan.report_command())}")
    if not plan.smoke:
        makespan = lpt_makespan([job.estimate_s for job in plan.jobs], plan.concurrency)
        print(f"# estimated training makespan {makespan:.0f} s (longest first on {plan.concurrency} slots), "
              f"+ ~{POST_RESERVE_S:.0f} s ensemble/report/archive, + install and cache pre-warm ~30 s; "
              f"trainer.max_time caps every job at the training deadline")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bash experiments/gpu/run.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where runs/, logs/, ensemble/, summary.* and results.tar.gz go")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic CPU run of the whole plan")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--jobs", type=int, default=None, help="jobs at a time (default: 4; smoke: 1)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers per job (full mode)")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time budget (default: 480; smoke: 1800)")
    parser.add_argument("--no-install", action="store_true", help="do not pip-install the .whl/ wheels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(args)
    if args.dry_run:
        if plan.smoke:
            plan.ckplus = plan.out / "fake_ckplus"
        elif plan.ckplus is not None and not plan.ckplus.exists():
            plan.ckplus = None
        dry_run(plan)
        return 0
    if plan.out.exists() and any(plan.out.iterdir()):
        print(f"error: {plan.out} is not empty; give a new folder (runs of two plans must not mix)", file=sys.stderr)
        return 2
    for sub in ("runs", "logs"):
        (plan.out / sub).mkdir(parents=True, exist_ok=True)
    code = 0
    try:
        plan.setup_environment()
        plan.setup_data()
        if not plan.smoke:
            plan.check_gpu()
            plan.prewarm_cache()
        plan.run_jobs()
        plan.run_ensemble()
        plan.run_report()
    except SystemExit as stop:  # a set-up error: still leave a summary saying why
        message = str(stop.code) if stop.code not in (None, 0) else ""
        if message:
            print(message, file=sys.stderr)
            plan.notes.append(message)
            code = 2
    except KeyboardInterrupt:  # the jobs were stopped by run_jobs; what finished is still summarised
        plan.notes.append("interrupted (Ctrl-C or SIGINT): the plan did not finish")
        code = 130
    except Exception as err:  # a bug or a timeout in a set-up step: the summary says which, the lease is not lost
        plan.notes.append(f"plan error: {type(err).__name__}: {err}")
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        code = 2
    summary = plan.write_outputs()
    print((plan.out / "summary.md").read_text())
    failed = [run["name"] for run in summary["runs"] if run["status"] != "ok"]
    if failed:
        print(f"{len(failed)} job(s) not ok: {', '.join(failed)}", file=sys.stderr)
    return code or (1 if failed or summary["ensemble"].get("exit_code") not in (0, None) else 0)


if __name__ == "__main__":
    sys.exit(main())
