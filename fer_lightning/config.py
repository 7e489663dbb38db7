"""OmegaConf resolvers the configs use; registered on import of `fer_lightning`."""

from __future__ import annotations

import functools
import json
import netrc
import os
import re
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from fer_lightning.errors import FERLightningError


def find_conf_dir() -> Path:
    """Where the Hydra configs are: the checkout's top-level ``conf/``, else the copy inside the installed package.

    The configs stay in ``conf/`` at the repository root, where Hydra users expect them and edit them; run from a
    checkout (an editable install, or the repository on ``sys.path``) that folder is used, so edits apply at once.
    A wheel installs nothing outside the package, so pyproject.toml maps ``conf/`` into it as
    ``fer_lightning/conf/``. The checkout is recognised by its pyproject.toml next to ``conf/train.yaml``: a
    site-packages folder has neither, and a checkout never holds ``fer_lightning/conf/``.
    """
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return checkout / "conf"
    return package / "conf"


CONF_DIR = find_conf_dir()


def wandb_offline() -> bool:
    """Log to W&B offline unless the user can reach it: no API key configured means offline.

    `WANDB_MODE` wins when set; otherwise a key in `WANDB_API_KEY` or in ~/.netrc (what `wandb login`
    writes) means online. Offline runs can be uploaded later with `wandb sync`.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in {"offline", "dryrun", "disabled"}:
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(netrc_path).authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return True


def symmetric_range(limit: float, strength: float) -> ListConfig:
    """`[-limit*s, limit*s]`: one `transforms.strength` knob scales every augmentation range (for searches)."""
    return OmegaConf.create([-float(limit) * float(strength), float(limit) * float(strength)])


def scale_range(delta: float, strength: float) -> ListConfig:
    """`[1 - delta*s, 1 + delta*s]` for zoom-style augmentations."""
    return OmegaConf.create([1.0 - float(delta) * float(strength), 1.0 + float(delta) * float(strength)])


# --- Run ids: what names a run's output folder -------------------------------------------------------------

RUN_ID_ENV = "FER_LIGHTNING_RUN_ID"  # set it to give a run its id (e.g. to continue a run in its own folder)
RUN_ID_MARKER = ".run_id.json"  # written into a run folder by the one process that owns it
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SLURM_INTERACTIVE_JOB_NAMES = ("bash", "interactive")  # Lightning's rule: such jobs are shells, not one run


class RunDirTakenError(FERLightningError, FileExistsError):
    """Another run already owns this output folder: writing into it would mix two runs' files."""


def launch_id(started: datetime, host: str, pid: int) -> str:
    """`2025-01-02_10-11-12_node042-12345`: sorts by start time; host and pid keep same-second launches apart."""
    short_host = re.sub(r"[^A-Za-z0-9-]", "", host.split(".")[0]) or "host"
    return f"{started:%Y-%m-%d_%H-%M-%S}_{short_host}-{pid}"


def _process_start_time(pid: int) -> datetime | None:
    """When process `pid` started, from /proc (Linux); None elsewhere.

    Derived from the kernel's boot time and the process's start tick, so every child reads the same value for
    the same parent: that is what lets torchrun's workers agree on one id without talking to each other.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks_after_boot = int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces
        boot_line = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        boot_time = int(boot_line.split()[1])
        return datetime.fromtimestamp(boot_time + ticks_after_boot // os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _torchrun_agent_launch_id(agent_pid: int, host: str) -> str | None:
    """The launch id of torchrun's agent if `agent_pid` is one (workers are its direct children), else None."""
    try:
        command = Path(f"/proc/{agent_pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "torchrun" not in command and "torch.distributed" not in command:
        return None  # e.g. `torchrun --no-python` running a shell script: each worker has its own parent
    started = _process_start_time(agent_pid)
    return launch_id(started, host, agent_pid) if started else None


def run_id_from_environment(env: Mapping[str, str], *, now: datetime | None = None, host: str | None = None,
                            pid: int | None = None, parent_pid: int | None = None) -> str:
    """The id of the run this process belongs to (the keyword arguments stand in for this process in tests).

    Every process of one distributed job composes the config on its own, so the id must come from what they
    share, and be the same again when SLURM requeues the job (Lightning then resumes from the
    ``hpc_ckpt_*.ckpt`` it left in the run folder). In order:

    - ``FER_LIGHTNING_RUN_ID``: the user's choice, as is.
    - a SLURM batch job: ``slurm-<job id>``, or ``slurm-<array job id>_<task id>`` for an array task (SLURM's own
      notation); ``SLURM_PROCID`` differs per rank, so it is not part of it. Interactive allocations (job name
      ``bash`` or ``interactive``, as Lightning defines them) run many trainings in one job: they fall through.
    - torchrun on one node: the launch id of torchrun's agent, the parent every local worker shares (whatever
      the rendezvous id: its default ``none`` is shared by unrelated launches, ``--standalone``'s is a uuid).
    - torchrun on several nodes: ``torchrun-<rendezvous id>`` (``--rdzv-id``, the same on every node).
    - anything else: the launch id of this process (start time, host, pid).
    """
    explicit = env.get(RUN_ID_ENV, "").strip()
    if explicit:
        if not _SAFE_ID.fullmatch(explicit):
            raise ValueError(f"{RUN_ID_ENV}={explicit!r}: a run id names a folder, so use only letters, digits, "
                             "'.', '_' and '-' (starting with a letter or digit)")
        return explicit
    host = host or socket.gethostname()
    if env.get("SLURM_JOB_ID") and env.get("SLURM_JOB_NAME") not in _SLURM_INTERACTIVE_JOB_NAMES:
        array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{array_job}_{array_task}" if array_job and array_task else f"slurm-{env['SLURM_JOB_ID']}"
    rendezvous_id = env.get("TORCHELASTIC_RUN_ID")
    if rendezvous_id is not None:
        if env.get("GROUP_WORLD_SIZE", "1") == "1":
            agent_id = _torchrun_agent_launch_id(os.getppid() if parent_pid is None else parent_pid, host)
            if agent_id:
                return agent_id
        if rendezvous_id not in ("", "none"):
            return "torchrun-" + re.sub(r"[^A-Za-z0-9._-]", "-", rendezvous_id)
    return launch_id(now or datetime.now(), host, os.getpid() if pid is None else pid)


@functools.cache
def current_run_id() -> str:
    """This process's run id (see `run_id_from_environment`), fixed at its first use.

    Cached for the process because the run dir, the sweep dir and `cfg.run_id` must name the same run, and
    OmegaConf's own cache (``use_cache``) lives in one config object only.
    """
    return run_id_from_environment(os.environ)


def claim_run_dir(output_dir: str | Path, run_id: str) -> None:
    """Make `output_dir` the folder of run `run_id`, or raise `RunDirTakenError` if another run owns it.

    Run ids never repeat across launches, so this only fires when two launches were pointed at one folder
    (e.g. the same ``hydra.run.dir`` or ``FER_LIGHTNING_RUN_ID`` twice); failing beats two runs silently
    overwriting each other's checkpoints and metrics. The marker is created with O_CREAT|O_EXCL, so of two
    launches racing for the folder exactly one wins. The same run claiming again (a requeued SLURM job, a
    torchrun restart, a resume with ``FER_LIGHTNING_RUN_ID`` set to the old id) is accepted. Call it from one
    process per run (global rank 0): every rank of a run has the same id, so more callers are harmless but pointless.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    marker = output_dir / RUN_ID_MARKER
    claim = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
             "claimed_at": datetime.now().isoformat(timespec="seconds")}
    try:
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        owner = _read_claim(marker)
        if owner is not None and owner.get("run_id") == run_id:
            return
        held_by = (f"run {owner.get('run_id')!r} (claimed by {owner.get('host')} pid {owner.get('pid')} at "
                   f"{owner.get('claimed_at')})" if owner is not None else f"another run (unreadable {marker})")
        continue_hint = (f", or, to continue that run in place, launch with {RUN_ID_ENV}={owner.get('run_id')}"
                         if owner is not None else "")
        raise RunDirTakenError(
            f"Output folder {output_dir} already belongs to {held_by}; this is run {run_id!r}. Refusing to mix "
            f"two runs' files: give this run its own folder (drop the hydra.run.dir or {RUN_ID_ENV} that points "
            f"here){continue_hint}."
        ) from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps(claim) + "\n")


def _read_claim(marker: Path, wait_s: float = 2.0) -> dict[str, object] | None:
    """The marker's content, None if unreadable; waits briefly as a racing winner creates it before writing."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            claim = json.loads(marker.read_text())
            return claim if isinstance(claim, dict) else None
        except (json.JSONDecodeError, OSError):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def register_resolvers() -> None:
    resolvers = {"fer_wandb_offline": wandb_offline, "fer_sym": symmetric_range, "fer_scale": scale_range,
                 "fer_mul": lambda a, b: float(a) * float(b), "fer_not": lambda value: not bool(value)}
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
    if not OmegaConf.has_resolver("fer_run_id"):
        # use_cache, like Hydra's `now`: Hydra copies a config's cache into every sweep job (other processes,
        # other machines under SLURM), so all jobs of a sweep resolve the sweep's id, not their own.
        OmegaConf.register_new_resolver("fer_run_id", current_run_id, use_cache=True)


register_resolvers()


def compose_config(config_name: str, overrides: list[str], output_dir: str | Path) -> DictConfig:
    """The config a Hydra app of this project would build (``train`` or ``eval``), outside the app.

    For tests and benchmark scripts: ``${hydra:...}`` interpolations resolve and the run directory is pinned to
    ``output_dir``, as in a real run.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]  # as in a Hydra app, the job's config does not carry the `hydra` node
    return cfg
