"""Lightning's loggers, fixed where they get in the way of a research run.

W&B: Lightning passes `anonymous=None` to `wandb.init`, which wandb now answers with "The anonymous setting has no
effect" on every run; the key is dropped here. W&B's own banner and end-of-run summary (about 25 lines) are
switched off with `quiet` unless asked for (`verbose=true`); `train` prints the one line that matters, where the
run is and how to sync it.

CSV: Lightning deletes `metrics.csv` whenever a logger opens a run folder that has one, so a run cut by a session's
end and resumed in its folder (`ckpt_path=RUN_DIR`) kept only the epochs after the cut, and its curves, report and
"best epoch" silently started mid-run. `CSVLogger.keep_history_before(step)` carries the earlier rows over.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    def __init__(self, *args: Any, quiet: bool = True, **kwargs: Any) -> None:
        if quiet and "settings" not in kwargs:
            import wandb

            kwargs["settings"] = wandb.Settings(quiet=True)
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


class CSVLogger(LightningCSVLogger):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._history: list[dict[str, str]] = []

    def keep_history_before(self, step: int, run_dir: str | Path | None = None) -> int:
        """Keep the rows a cut run logged before `step` (the resumed checkpoint's global step).

        `run_dir` is the cut run's folder, where the checkpoint came from; by default this logger's own, the usual
        resume in place. Rows at or after `step` come from the part of the cut epoch that no checkpoint holds; the
        resumed run logs those steps again, so keeping them would count that epoch twice. Call it before anything
        is logged. Returns how many rows are kept.
        """
        if self._experiment is not None:
            raise RuntimeError("keep_history_before() must run before the logger writes anything")
        log_dir = Path(self.log_dir)
        if run_dir is not None:
            log_dir = Path(run_dir) / log_dir.relative_to(self.save_dir)
        path = log_dir / _ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return 0
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        self._history = [{key: value for key, value in row.items() if value != ""} for row in rows
                         if row.get("step") not in (None, "") and float(row["step"]) < step]
        return len(self._history)

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            writer = super().experiment  # Lightning's writer deletes the old metrics.csv here
            if self._history:
                writer.metrics = self._history
                writer.save()  # at once: a run cut again before its first flush keeps its history
                self._history = []
        return self._experiment
