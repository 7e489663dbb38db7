"""How many DataLoader worker processes should training use? Training speed for data.num_workers = 0, 1, 2, ...

    python experiments/num_workers/measure.py +experiment=compact_cnn data.root=/work/shared/data/fer2013.zip \
        --workers 0 1 2 auto --batches 100 --repeats 2 --out experiments/num_workers/results/compact_cnn.json

Every measurement is `full()` of experiments/accuracy/throughput.py (``Trainer.fit`` for ``--batches`` batches,
validation off, images/s from the EpochTimer callback) plus the training DataLoader alone (``loader_only``), in a
fresh process of its own, so no setting inherits another's threads, workers or allocator state. Settings are
interleaved across repeats, so a slow spell of the machine hits every setting alike. The development machine is
shared, so each run also records how much CPU other processes used while it ran (``others_cpu_s``, from
/proc/stat minus this run's own CPU time, its workers included): runs where others took a noticeable share are
flagged rather than silently averaged in.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
THROUGHPUT = HERE.parent / "accuracy" / "throughput.py"
QUIET_OTHERS_CORES = 0.25  # others may use this many cores on average during a run before it is flagged


def _machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load_throughput() -> Any:
    spec = importlib.util.spec_from_file_location("throughput", THROUGHPUT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def run_one(workers: str, overrides: list[str], batches: int) -> dict[str, Any]:
    """One setting, in this process: the resolved worker count, training images/s, wall time, loader images/s."""
    import torch
    from hydra.utils import instantiate

    from fer_lightning.config import compose_config

    throughput = _load_throughput()
    cfg = compose_config("train", [*overrides, f"data.num_workers={workers}", "data.persistent_workers=false",
                                   "logger=none"], Path("outputs/num_workers"))
    torch.manual_seed(0)
    resolved = instantiate(cfg.data).num_workers  # what `auto` becomes on this machine
    start = time.perf_counter()
    train_img_s = throughput.full(cfg, batches)
    fit_wall_s = time.perf_counter() - start
    return {"num_workers": workers, "resolved_num_workers": resolved, "train_img_s": round(train_img_s, 1),
            "fit_wall_s": round(fit_wall_s, 2), "loader_only_img_s": round(throughput.loader_only(cfg, batches), 1),
            "torch_threads": torch.get_num_threads()}


def _wait_until_quiet(max_wait_s: float) -> float:
    """Cores other processes keep busy (sampled over 2 s), after waiting up to `max_wait_s` for them to finish."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = _machine_cpu_s()
        time.sleep(2.0)
        busy = (_machine_cpu_s() - before) / 2.0
        if busy < QUIET_OTHERS_CORES or time.monotonic() > deadline:
            return round(busy, 2)


def _spawn(workers: str, overrides: list[str], batches: int, quiet_wait_s: float) -> dict[str, Any]:
    busy_before = _wait_until_quiet(quiet_wait_s)
    machine0, own0, start = _machine_cpu_s(), _children_cpu_s(), time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--one", workers, "--batches", str(batches), *overrides],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    own = _children_cpu_s() - own0
    others = max(0.0, _machine_cpu_s() - machine0 - own)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update({"process_wall_s": round(wall, 2), "process_cpu_s": round(own, 2),
                   "others_cpu_s": round(others, 2), "others_cores_before": busy_before,
                   "disturbed": others / wall > QUIET_OTHERS_CORES})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quiet-wait-s", type=float, default=180.0,
                        help="wait up to this long for other processes to go idle before each run")
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one setting, in this process
    args, overrides = parser.parse_known_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, overrides, args.batches)))
        return

    from fer_lightning.data.datamodule import usable_cores

    # Decode FER2013 into the cache first, so no timed run pays for the one-off decode.
    subprocess.run([sys.executable, "-c", "import sys; from hydra.utils import instantiate; "
                    "from fer_lightning.config import compose_config; "
                    "instantiate(compose_config('train', sys.argv[1:], 'outputs/num_workers').data).prepare_data()",
                    *overrides], check=True)
    runs = [_spawn(w, overrides, args.batches, args.quiet_wait_s) for _ in range(args.repeats) for w in args.workers]
    for run in runs:
        print(json.dumps(run))
    summary = {}
    for workers in args.workers:
        mine = [r for r in runs if r["num_workers"] == workers]
        clean = [r for r in mine if not r["disturbed"]] or mine
        summary[workers] = {"resolved": mine[0]["resolved_num_workers"],
                            "train_img_s_best": max(r["train_img_s"] for r in clean),
                            "train_img_s_all": [r["train_img_s"] for r in mine],
                            "fit_wall_s_best": min(r["fit_wall_s"] for r in clean)}
    results = {
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {usable_cores()} usable, "
                   f"{platform.processor() or platform.platform()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "overrides": overrides, "batches": args.batches, "repeats": args.repeats,
        "summary": summary, "runs": runs,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
