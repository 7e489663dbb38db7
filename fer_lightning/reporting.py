"""One comparison (report.md + PNGs) from a sweep's run folders; the command is `python -m fer_lightning.report`.

Everything comes from what the runs wrote (metrics.json, csv/metrics.csv, confusion_matrix.json, config.yaml,
.hydra/overrides.yaml), so a report can be rebuilt at any time without a GPU. Experiments are ranked on PublicTest
(val) only: PrivateTest (test) is printed next to it but never used to sort or choose, as in the training protocol.

A folder such as `outputs/train/runs` holds unrelated runs side by side, so runs are grouped by data source and
configuration (`group_key`): only seeds (and where or how fast a run ran) vary within a group, and no number is
averaged across groups. Debug runs and synthetic runs (`run_kind`) are listed apart and never called best.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fer_lightning.labels import EMOTIONS
from fer_lightning.metrics import SCORES as METRIC_SCORES
from fer_lightning.metrics import class_key, metric_key
from fer_lightning.plots import draw_confusion_matrix

SYNTHETIC_WARNING = "SYNTHETIC DATA: not FER2013 results"
SCORES = tuple(metric_key(split, score) for score in METRIC_SCORES for split in ("val", "test"))
COSTS = ("params", "train_time_s", "epochs", "train/images_per_s")
CURVE_KEYS = ("train/acc", "val/acc", "train/loss_epoch", "val/loss")
# Epoch-level keys only the training loop logs: they tell training epochs from the final re-validation.
_TRAIN_EPOCH_KEYS = ("train/acc", "train/loss_epoch", "train/epoch_time_s")


# Overrides that do not change what a run measures: where and how fast it ran, what it logs, where files go.
# Seeds are what varies within a group. `data` and `data.root` are neutral here because the data source is a part
# of the group key of its own (`data_source`); group choices of `trainer` pick hardware (cpu, gpu, ddp, ...).
NEUTRAL_OVERRIDES = frozenset({
    "seed", "run_id", "tags", "ckpt_path", "data", "data.root", "data.num_workers", "data.pin_memory",
    "data.persistent_workers", "data.cache", "data.cache_dir", "data.download", "trainer", "trainer.accelerator",
    "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.default_root_dir",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "callbacks.progress_bar", "callbacks.model_summary", "callbacks.lr_monitor", "callbacks.epoch_timer",
    "callbacks.wandb_confusion_matrix",
})
# whole groups: `logger=csv`, `hydra.launcher.n_jobs=2`; `extra_test` only adds columns (never selects or trains)
NEUTRAL_PREFIXES = ("hydra", "paths", "logger", "launcher", "extra_test")
# Named in the row label already (the experiment), so not repeated among its overrides.
EXPERIMENT_KEYS = ("experiment", "experiment_name")
# Settings that make a run a quick check: it scored part of a split, or memorised a few batches.
DEBUG_TRAINER_KEYS = ("fast_dev_run", "overfit_batches", "limit_val_batches", "limit_test_batches")
KINDS = ("result", "debug", "synthetic")  # report order: results first, never mixed with the others


@dataclass
class Run:
    """One finished job; `curves` holds per-training-epoch lists aligned with `curves["epoch"]` (NaN = missing).

    `overrides` are the job's Hydra overrides (`.hydra/overrides.yaml`; empty for runs made without the Hydra app)
    and `config` its resolved config.yaml (None if absent): what tells configurations and debug runs apart.
    """

    dir: Path
    metrics: dict[str, Any]
    curves: dict[str, list[float]]
    confusion: np.ndarray | None = None
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None

    @property
    def experiment(self) -> str:
        return str(self.metrics.get("experiment") or self.metrics.get("backbone") or self.dir.name)


@dataclass
class FailedRun:
    """A job Hydra started that left no metrics.json: crashed, killed or still running."""

    dir: Path
    overrides: list[str]
    log_tail: str


def _number(value: Any) -> float:
    """Missing, null and non-numeric values become NaN, so one incomplete seed does not break a summary."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_curves(csv_path: Path) -> dict[str, list[float]]:
    """Per-epoch curves from a sparse CSVLogger file.

    Only epochs with a training row count (the re-validation of the best checkpoint after fit may log a later
    epoch), and the first val value of an epoch wins (that re-validation repeats the last epoch otherwise).
    """
    per_key: dict[str, dict[int, float]] = {key: {} for key in CURVE_KEYS}
    trained: set[int] = set()
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue  # learning-rate rows carry a step but no epoch
            epoch = int(float(row["epoch"]))
            if any(row.get(key) for key in _TRAIN_EPOCH_KEYS):
                trained.add(epoch)
            for key in CURVE_KEYS:
                if row.get(key):
                    per_key[key].setdefault(epoch, _number(row[key]))
    epochs = sorted(trained)
    return {"epoch": [float(e) for e in epochs], **{k: [per_key[k].get(e, math.nan) for e in epochs]
                                                     for k in CURVE_KEYS}}


def _read_overrides(job: Path) -> list[str]:
    overrides_file = job / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])] if overrides_file.is_file() else []


def _read_config(job: Path) -> dict[str, Any] | None:
    config_file = job / "config.yaml"
    try:
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    except yaml.YAMLError:
        return None
    return config if isinstance(config, dict) else None


def _failed_run(job: Path) -> FailedRun:
    overrides = _read_overrides(job)
    logs = sorted(job.glob("*.log"))
    lines = logs[0].read_text(errors="replace").strip().splitlines() if logs else []
    return FailedRun(dir=job, overrides=overrides, log_tail="\n".join(lines[-15:]))


def collect_runs(root: Path) -> tuple[list[Run], list[FailedRun]]:
    """Every job under `root` (a multirun dir, a single run dir, or a folder of several multiruns).

    Jobs with a `.hydra/` dir but no metrics.json are returned as failed, so a crashed arm can never vanish
    from a comparison unnoticed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"multirun directory not found: {root}")
    runs: list[Run] = []
    failed: list[FailedRun] = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            failed.append(FailedRun(path.parent, [], f"unreadable metrics.json: {err}"))
            continue
        csv_files = sorted(path.parent.glob("csv/**/metrics.csv"))
        curves = read_curves(csv_files[0]) if csv_files else {"epoch": [], **{k: [] for k in CURVE_KEYS}}
        cm_file = path.parent / "confusion_matrix.json"
        confusion = np.asarray(json.loads(cm_file.read_text()), dtype=np.int64) if cm_file.is_file() else None
        runs.append(Run(dir=path.parent, metrics=metrics, curves=curves, confusion=confusion,
                        overrides=_read_overrides(path.parent), config=_read_config(path.parent)))
    for hydra_dir in sorted(root.rglob(".hydra")):
        if hydra_dir.is_dir() and not (hydra_dir.parent / "metrics.json").is_file():
            failed.append(_failed_run(hydra_dir.parent))
    return runs, failed


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0  # sample std; one seed has no spread
    return float(np.mean(finite)), std


def _split_override(override: str) -> tuple[str, str]:
    """`+trainer.max_epochs=3` -> (`trainer.max_epochs`, `3`); `~callbacks.early_stopping` -> (its key, `~`)."""
    text = override.strip()
    if text.startswith("~"):
        return text.lstrip("~").split("=", 1)[0], "~"
    key, _, value = text.lstrip("+").partition("=")
    return key.strip(), value.strip()


def is_neutral_override(key: str) -> bool:
    """True for an override that does not change what a run measures (see `NEUTRAL_OVERRIDES`)."""
    return key in NEUTRAL_OVERRIDES or any(key == p or key.startswith((f"{p}.", f"{p}/")) for p in NEUTRAL_PREFIXES)


def result_overrides(run: Run) -> list[str]:
    """The run's overrides that change results, normalised (`+`/`++` dropped) and sorted: its configuration."""
    found = []
    for override in run.overrides:
        key, value = _split_override(override)
        if not is_neutral_override(key):
            found.append(f"~{key}" if value == "~" else f"{key}={value}")
    return sorted(set(found))


def data_source(run: Run) -> str:
    """What the run read: the datamodule's `source` (absolute path, or the synthetic set's seed and sizes), else
    `data.root` of its config.yaml, else the dataset name (runs written before metrics.json named its source)."""
    source = run.metrics.get("source")
    if source:
        return str(source)
    data = (run.config or {}).get("data") or {}
    if isinstance(data, dict) and data.get("root") and not run.metrics.get("synthetic"):
        return str(data["root"])
    return str(run.metrics.get("dataset") or "unknown data")


def debug_reasons(run: Run) -> list[str]:
    """Why a run is a quick check rather than a result: `+debug=...`, a trainer setting that cuts evaluation or
    memorises batches, or a metrics.json that says its evaluation was truncated. Empty for a result.

    `limit_train_batches` and `max_epochs` alone are a training budget, a configuration of their own (they split
    groups), not a debug run: the README's short-budget sweeps use them. `limit_val_batches`/`limit_test_batches`
    count only for runs written before metrics.json said how many faces were scored (`truncated`): a limit larger
    than the split cuts nothing.
    """
    reasons = []
    for override in run.overrides:
        key, value = _split_override(override)
        if key == "debug" or key.startswith("debug/"):
            reasons.append(f"+debug={value}")
    trainer = (run.config or {}).get("trainer") or {}
    from_overrides = {key.removeprefix("trainer."): value for key, value in map(_split_override, run.overrides)
                      if key.startswith("trainer.")}
    for key in DEBUG_TRAINER_KEYS:
        value = trainer.get(key, from_overrides.get(key)) if isinstance(trainer, dict) else from_overrides.get(key)
        if value is None or str(value).lower() in ("", "false", "none", "null"):
            continue
        if key.startswith("limit_") and (_number(value) == 1.0 or "truncated" in run.metrics):
            continue  # the whole split, or a run that says itself what it scored
        if key == "overfit_batches" and _number(value) == 0.0:
            continue
        reasons.append(key if str(value).lower() == "true" else f"{key}={value}")
    faces = run.metrics.get("eval_faces") or {}
    for split in run.metrics.get("truncated") or []:
        counts = faces.get(split) or {}
        reasons.append(f"{split}: {counts.get('evaluated', '?')} of {counts.get('total', '?')} faces")
    return list(dict.fromkeys(reasons))


def run_kind(run: Run) -> str:
    """`synthetic` (drawn faces: never a FER2013 number), `debug` (see `debug_reasons`) or `result`."""
    if run.metrics.get("synthetic") or run.metrics.get("dataset") == "synthetic":
        return "synthetic"
    return "debug" if debug_reasons(run) else "result"


def group_key(run: Run) -> str:
    """Runs with the same key differ only by seed (and by neutral overrides): their numbers may be averaged."""
    return json.dumps([run_kind(run), data_source(run), run.experiment, result_overrides(run)])


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """`group_key` -> its runs, in the order first seen."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[group_key(run)].append(run)
    return dict(groups)


def _short_sources(sources: list[str]) -> dict[str, str]:
    """File names where they tell the sources apart (`fer2013.zip`), the whole description where they do not."""
    names = {source: "synthetic" if source.startswith("synthetic") else
             Path(source).name if "/" in source or "\\" in source else source for source in sources}
    clash = {name for name in names.values() if list(names.values()).count(name) > 1}
    return {source: source if name in clash else name for source, name in names.items()}


def _val_order(row: dict[str, Any]) -> float:
    return -row["val/acc_mean"] if math.isfinite(row["val/acc_mean"]) else math.inf


_EXTRA_TEST_ACC = re.compile(r"^test/(?P<name>[a-z][a-z0-9_]*)/acc$")


def extra_test_names(runs: list[Run]) -> list[str]:
    """Extra test sets (`extra_test=ckplus`) any run was scored on, in first-seen order: each gets report columns."""
    names = (match["name"] for run in runs for key in run.metrics if (match := _EXTRA_TEST_ACC.match(key)))
    return list(dict.fromkeys(names))


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per group (`group_key`): mean/std over seeds of the scores, mean costs. Results come first, then
    debug and synthetic rows; within each, data source by data source, best PublicTest mean first.

    Keys: experiment, label (the experiment plus the overrides that set this group apart from the other rows),
    group, kind, source, overrides, debug (reasons), truncated, notes, n, seeds, dataset, synthetic, backbone,
    finetune, pretrained, `<score>_mean`/`<score>_std` for val/acc, test/acc, val/f1_macro, test/f1_macro, the cost
    means (params, train_time_s, epochs, train/images_per_s), `val_test_gap` (mean of val/acc - test/acc) and
    `test/acc_<class>` means (NaN where no run scored a face of that class), and for each extra test set
    `test/<name>/acc` and `test/<name>/f1_macro` as `_mean`/`_std` (NaN for a row whose runs were not scored on it).
    """
    rows = []
    extra_scores = [metric_key(f"test/{name}", score) for name in extra_test_names(runs) for score in ("acc",
                                                                                                       "f1_macro")]
    for group_id, group in group_runs(runs).items():
        first = group[0]
        values = {key: [_number(r.metrics.get(key)) for r in group]
                  for key in (*SCORES, *extra_scores, *COSTS, *(class_key("test", c) for c in EMOTIONS))}
        debug = list(dict.fromkeys(reason for run in group for reason in debug_reasons(run)))
        row: dict[str, Any] = {
            "experiment": first.experiment, "group": group_id, "kind": run_kind(first), "source": data_source(first),
            "overrides": result_overrides(first), "debug": debug,
            "truncated": any(run.metrics.get("truncated") for run in group),
            "n": len(group), "seeds": [r.metrics.get("seed") for r in group],
            "dataset": first.metrics.get("dataset"), "synthetic": any(r.metrics.get("synthetic") for r in group),
            "backbone": first.metrics.get("backbone"), "finetune": first.metrics.get("finetune"),
            "pretrained": first.metrics.get("pretrained"),
            "val_test_gap": _mean_std([v - t for v, t in zip(values["val/acc"], values["test/acc"])])[0],
        }
        for key, column in values.items():
            mean, std = _mean_std(column)
            if key in SCORES or key in extra_scores:
                row[f"{key}_mean"], row[f"{key}_std"] = mean, std
            else:
                row[key] = mean
        rows.append(row)
    _label(rows)
    sources = list(dict.fromkeys(row["source"] for row in rows))
    return sorted(rows, key=lambda r: (KINDS.index(r["kind"]), sources.index(r["source"]), _val_order(r)))


def common_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Result-changing overrides every row shares (a sweep's budget, say): said once, not in every label."""
    if len(rows) < 2:
        return []
    shared = set(rows[0]["overrides"]).intersection(*(row["overrides"] for row in rows[1:]))
    return sorted(o for o in shared if _split_override(o)[0] not in EXPERIMENT_KEYS)


def _label(rows: list[dict[str, Any]]) -> None:
    """Set each row's `label` (table rows, legends) and `notes` (what is not a full result about it)."""
    common = set(common_overrides(rows))
    short = _short_sources([row["source"] for row in rows])
    several_sources = len(short) > 1
    for row in rows:
        own = [o for o in row["overrides"] if o not in common and _split_override(o)[0] not in EXPERIMENT_KEYS]
        row["label"] = row["experiment"] + (f" [{' '.join(own)}]" if own else "") + (
            f" @ {short[row['source']]}" if several_sources else "")
        cut = [reason for reason in row["debug"] if reason.startswith(("val:", "test:"))]
        settings = [reason for reason in row["debug"] if reason not in cut]
        notes = ["SYNTHETIC"] if row["kind"] == "synthetic" else []
        notes += [f"debug: {', '.join(settings)}"] if settings else []
        notes += [f"truncated {', '.join(cut)}"] if cut else []
        row["notes"] = "; ".join(notes)


def _pct(mean: float, std: float | None = None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None and math.isfinite(std) else "")


def _num(value: float, fmt: str) -> str:
    return format(value, fmt) if math.isfinite(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows])


def _row_label(row: dict[str, Any]) -> str:
    return str(row.get("label") or row["experiment"])


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """Scores and costs per group; a `notes` column (synthetic, debug, truncated evaluation) when a row has one."""
    extra = list(dict.fromkeys(key.removesuffix("_mean") for r in summary for key in r
                               if _EXTRA_TEST_ACC.match(key.removesuffix("_mean"))))
    header = ["experiment", "n seeds", "PublicTest acc %", "PrivateTest acc %", "PublicTest macro-F1 %",
              "PrivateTest macro-F1 %", *(f"{key.split('/')[1]} acc % (extra test)" for key in extra),
              "params (M)", "train time (s)", "epochs", "images/s"]
    with_notes = any(r.get("notes") for r in summary)
    return _table(header + (["notes"] if with_notes else []), [
        [_row_label(r), str(r["n"]), *(_pct(r[f"{k}_mean"], r[f"{k}_std"]) for k in SCORES),
         *(_pct(r.get(f"{k}_mean", math.nan), r.get(f"{k}_std")) for k in extra),
         _num(r["params"] / 1e6, ".2f"), _num(r["train_time_s"], ".1f"), _num(r["epochs"], ".1f"),
         _num(r["train/images_per_s"], ".0f"), *([r.get("notes", "")] if with_notes else [])] for r in summary])


def per_class_table(summary: list[dict[str, Any]]) -> str:
    """Mean PrivateTest accuracy per class; n/a where no run of the row scored a face of the class."""
    return _table(["experiment", *EMOTIONS], [[_row_label(r), *(_pct(r[class_key("test", c)]) for c in EMOTIONS)]
                                              for r in summary])


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Figure, np.ndarray]:
    """Agg canvas without pyplot: no global backend switch, so a notebook importing this keeps inline plots."""
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols)).ravel()


def _colours(n: int) -> list[tuple[float, ...]]:
    return [colormaps["tab10"](i % 10) for i in range(n)]


def _runs_of(row: dict[str, Any], groups: dict[str, list[Run]]) -> list[Run]:
    return groups.get(row.get("group", ""), [])


def curves_figure(runs: list[Run], summary: list[dict[str, Any]]) -> Figure | None:
    groups = group_runs(runs)
    if not any(r.curves["epoch"] for row in summary for r in _runs_of(row, groups)):
        return None
    fig, axes = _figure(12, 4.5, 1, 2)
    for colour, row in zip(_colours(len(summary)), summary):
        logged = [run for run in _runs_of(row, groups) if run.curves["epoch"]]
        for ax, key in zip(axes, ("train/acc", "val/acc")):
            per_epoch: dict[float, list[float]] = defaultdict(list)  # seeds may stop early at different epochs
            for run in logged:
                for epoch, value in zip(run.curves["epoch"], run.curves[key]):
                    if math.isfinite(value):
                        per_epoch[epoch].append(value)
            epochs = sorted(per_epoch)
            if epochs:
                ax.plot(epochs, [np.mean(per_epoch[e]) for e in epochs], color=colour, marker="o", markersize=3,
                        label=f"{_row_label(row)} (n={len(logged)})")
                ax.fill_between(epochs, [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs],
                                color=colour, alpha=0.2)
    for ax, title in zip(axes, ("train accuracy (Training)", "val accuracy (PublicTest)")):
        ax.set(title=title, xlabel="epoch", ylabel="accuracy (mean over seeds, band = min-max)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return fig


def per_class_figure(summary: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = _figure(12, 4.5)
    width, x = 0.8 / len(summary), np.arange(len(EMOTIONS))
    for i, (colour, row) in enumerate(zip(_colours(len(summary)), summary)):
        ax.bar(x + (i - (len(summary) - 1) / 2) * width, [row[class_key("test", c)] for c in EMOTIONS], width,
               color=colour, label=_row_label(row))
    ax.set_xticks(x, EMOTIONS)
    ax.set(ylim=(0, 1), ylabel="accuracy (recall), mean over seeds", title="PrivateTest accuracy per class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    return fig


def confusion_figure(runs: list[Run], summary: list[dict[str, Any]]) -> Figure | None:
    """Counts summed over seeds, then row-normalised: per-class recall, readable despite FER's imbalance."""
    by_group = group_runs(runs)
    groups = {_row_label(row): [r.confusion for r in _runs_of(row, by_group) if r.confusion is not None]
              for row in summary}
    matrices = {name: (np.sum(found, axis=0), len(found)) for name, found in groups.items() if found}
    if not matrices:
        return None
    ncols = min(len(matrices), 3)
    nrows = math.ceil(len(matrices) / ncols)
    fig, axes = _figure(4.6 * ncols, 4.4 * nrows + 0.3, nrows, ncols)
    for ax, (name, (counts, n)) in zip(axes, matrices.items()):
        draw_confusion_matrix(ax, counts, EMOTIONS, show_counts=False, fontsize=6.5)
        ax.tick_params(labelsize=8)
        ax.set_title(f"{name} (n={n})")
    for ax in axes[len(matrices):]:
        ax.axis("off")
    fig.suptitle("PrivateTest confusion matrices (summed over seeds, rows normalised)")
    return fig


def accuracy_figure(summary: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = _figure(max(6.0, 1.6 * len(summary) + 2), 4.5)
    x = np.arange(len(summary))
    for offset, key, label in ((-0.2, "val/acc", "PublicTest (selection)"), (0.2, "test/acc", "PrivateTest")):
        ax.bar(x + offset, [r[f"{key}_mean"] for r in summary], 0.4, yerr=[r[f"{key}_std"] for r in summary],
               capsize=3, label=label)
    ax.axhline(1 / len(EMOTIONS), color="grey", linestyle="--", linewidth=1, label="uniform chance")
    ax.set_xticks(x, [_row_label(r) for r in summary], rotation=20, ha="right")
    ax.set(ylim=(0, 1), ylabel="accuracy (mean ± std over seeds)", title="Accuracy per experiment")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def figures(runs: list[Run], summary: list[dict[str, Any]]) -> dict[str, Figure]:
    """PNG name -> figure; curves and confusion matrices are left out when no run logged them.

    Only the result rows are drawn when there are any: a debug or synthetic bar next to a result invites the very
    comparison the tables keep apart.
    """
    summary = _plotted_rows(summary)
    built = {"accuracy.png": accuracy_figure(summary), "curves.png": curves_figure(runs, summary),
             "per_class.png": per_class_figure(summary), "confusion_matrices.png": confusion_figure(runs, summary)}
    return {name: fig for name, fig in built.items() if fig is not None}


def _plotted_rows(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in summary if r.get("kind", "result") == "result"] or summary


def best_line(summary: list[dict[str, Any]]) -> str:
    """The best result group on PublicTest, one line per data source; never a debug or synthetic group."""
    results = [r for r in summary if r.get("kind", "result") == "result"]
    if not results:
        return ("No full FER2013 result among these runs (only debug, cut-down or synthetic runs, listed apart): "
                "none is ranked as best.")
    sources = list(dict.fromkeys(r.get("source") for r in results))
    lines = []
    for source in sources:
        best = min((r for r in results if r.get("source") == source), key=_val_order)
        where = f" ({source})" if len(sources) > 1 else ""
        lines.append(f"Best on PublicTest{where}: **{_row_label(best)}** "
                     f"({_pct(best['val/acc_mean'], best['val/acc_std'])} %); its PrivateTest accuracy: "
                     f"{_pct(best['test/acc_mean'], best['test/acc_std'])} % (n={best['n']} seeds; chosen on "
                     "PublicTest only).")
    return "\n".join(lines)


def _seed_notes(rows: list[dict[str, Any]]) -> list[str]:
    # Runs of one group should differ by seed; identical seeds mean the spread is not seed noise.
    return [f"Note: {_row_label(r)} has {r['n']} runs but seeds {r['seeds']}: mean/std mix runs that differ in "
            "something the overrides do not show." for r in rows if len(set(map(str, r["seeds"]))) < r["n"]]


def _tables(rows: list[dict[str, Any]], level: str = "###") -> list[str]:
    lines = []
    common = common_overrides(rows)
    if common:
        lines += [f"Overrides common to these rows: `{' '.join(common)}`", ""]
    lines += [*(note for note in _seed_notes(rows)), *([""] if _seed_notes(rows) else [])]
    return lines + [f"{level} Accuracy and cost (mean ± std over seeds)", "", markdown_table(rows), "",
                    f"{level} PrivateTest accuracy per class % (mean over seeds)", "", per_class_table(rows), ""]


def write_report(runs: list[Run], failed: list[FailedRun], out_dir: Path) -> Path:
    """Write report.md and its PNGs into `out_dir`; returns the path of report.md.

    Sections: results per data source (each ranked on PublicTest, with its best group), then debug and cut-down
    runs, then synthetic runs, each in tables of their own; failed jobs; figures of the results (or, where there
    are none, of everything, said so).
    """
    if not runs:
        raise ValueError("no finished runs to report on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_kind: dict[str, list[Run]] = {kind: [r for r in runs if run_kind(r) == kind] for kind in KINDS}
    datasets = sorted({str(r.metrics.get("dataset")) for r in runs})
    lines = ["# Experiment comparison", ""]
    if by_kind["synthetic"]:
        lines += [f"> **⚠ {SYNTHETIC_WARNING}** (procedurally drawn faces: a pipeline demo only)", ""]
    mixed = " (**mixed datasets: compare rows only within one section**)" if len(datasets) > 1 else ""
    lines.append(f"Dataset: {', '.join(datasets)}{mixed}")
    counts = ", ".join(f"{len(by_kind[kind])} {name}" for kind, name in
                       (("result", "result run(s)"), ("debug", "debug or cut-down run(s)"),
                        ("synthetic", "synthetic run(s)")) if by_kind[kind])
    lines += ["", f"{len(runs)} finished runs: {counts}. A row is one group: the same data source and configuration "
              "(experiment and every override that changes results); only seeds vary within it, and no number is "
              "averaged across rows. Debug and synthetic runs are listed apart and never ranked.", "",
              "val = PublicTest selects checkpoints and ranks experiments; test = PrivateTest is reported only.", ""]
    if not by_kind["result"]:
        lines += [best_line([]), ""]
    for source in dict.fromkeys(data_source(r) for r in by_kind["result"]):
        rows = summarize([r for r in by_kind["result"] if data_source(r) == source])
        lines += [f"## Results on {source}", "", best_line(rows), "", *_tables(rows)]
    if by_kind["debug"]:
        lines += [f"## Debug and cut-down runs: not results ({len(by_kind['debug'])})", "",
                  "Quick checks (`+debug=...`, `fast_dev_run`, `overfit_batches`) and runs that scored part of a "
                  "split (`trainer.limit_val_batches` / `limit_test_batches`): they show that the pipeline runs, not "
                  "how good a model is. The notes say why; n/a: no face of that class was scored.", "",
                  *_tables(summarize(by_kind["debug"]))]
    if by_kind["synthetic"]:
        lines += [f"## Synthetic runs: not FER2013 results ({len(by_kind['synthetic'])})", "",
                  "Procedurally drawn faces (`data=synthetic`): a demo of the pipeline.", "",
                  *_tables(summarize(by_kind["synthetic"]))]
    lines += [f"## Failed jobs ({len(failed)})", "", *(["None."] if not failed else [])]
    for job in failed:  # parent/name: unique even across several multiruns, and short
        lines.append(f"- `{job.dir.parent.name}/{job.dir.name}` (no metrics.json: crashed, killed or unfinished): "
                     f"overrides `{' '.join(job.overrides) or 'unknown'}`")
        if job.log_tail:
            lines += ["", "  ```", *(f"  {line}" for line in job.log_tail.splitlines()), "  ```"]
    plotted = summarize(by_kind["result"] or runs)
    lines += ["", "## Figures" + ("" if by_kind["result"] else " (debug or synthetic runs: not results)"), ""]
    saved = figures(runs, plotted)
    for name, fig in saved.items():
        fig.savefig(out_dir / name)
        lines += [f"![{name[:-4]}]({name})", ""]
    lines += [f"No {name[:-4].replace('_', ' ')}: no run wrote {source}.\n" for name, source in
              (("curves.png", "csv/metrics.csv (CSV logger off)"), ("confusion_matrices.png", "confusion_matrix.json"))
              if name not in saved]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
