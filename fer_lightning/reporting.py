"""One comparison (report.md + PNGs) from a sweep's run folders; the command is `python -m fer_lightning.report`.

Everything comes from what the runs wrote (metrics.json, csv/metrics.csv, confusion_matrix.json), so a report
can be rebuilt at any time without a GPU. Experiments are ranked on PublicTest (val) only: PrivateTest (test)
is printed next to it but never used to sort or choose, as in the training protocol.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
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


@dataclass
class Run:
    """One finished job; `curves` holds per-training-epoch lists aligned with `curves["epoch"]` (NaN = missing)."""

    dir: Path
    metrics: dict[str, Any]
    curves: dict[str, list[float]]
    confusion: np.ndarray | None = None

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


def _failed_run(job: Path) -> FailedRun:
    overrides_file = job / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])] if overrides_file.is_file() else []
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
        runs.append(Run(dir=path.parent, metrics=metrics, curves=curves, confusion=confusion))
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


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.experiment].append(run)
    return dict(groups)


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per experiment: mean/std over seeds of the scores, mean costs; best PublicTest mean first.

    Keys: experiment, n, seeds, dataset, synthetic, backbone, finetune, pretrained, `<score>_mean`/`<score>_std` for
    val/acc, test/acc, val/f1_macro, test/f1_macro, the cost means (params, train_time_s, epochs,
    train/images_per_s), `val_test_gap` (mean of val/acc - test/acc) and `test/acc_<class>` means.
    """
    rows = []
    for name, group in group_runs(runs).items():
        values = {key: [_number(r.metrics.get(key)) for r in group]
                  for key in (*SCORES, *COSTS, *(class_key("test", c) for c in EMOTIONS))}
        row: dict[str, Any] = {
            "experiment": name, "n": len(group), "seeds": [r.metrics.get("seed") for r in group],
            "dataset": group[0].metrics.get("dataset"), "synthetic": any(r.metrics.get("synthetic") for r in group),
            "backbone": group[0].metrics.get("backbone"), "finetune": group[0].metrics.get("finetune"),
            "pretrained": group[0].metrics.get("pretrained"),
            "val_test_gap": _mean_std([v - t for v, t in zip(values["val/acc"], values["test/acc"])])[0],
        }
        for key, column in values.items():
            mean, std = _mean_std(column)
            if key in SCORES:
                row[f"{key}_mean"], row[f"{key}_std"] = mean, std
            else:
                row[key] = mean
        rows.append(row)
    return sorted(rows, key=lambda r: -r["val/acc_mean"] if math.isfinite(r["val/acc_mean"]) else math.inf)


def _pct(mean: float, std: float | None = None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None and math.isfinite(std) else "")


def _num(value: float, fmt: str) -> str:
    return format(value, fmt) if math.isfinite(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows])


def markdown_table(summary: list[dict[str, Any]]) -> str:
    header = ["experiment", "n seeds", "PublicTest acc %", "PrivateTest acc %", "PublicTest macro-F1 %",
              "PrivateTest macro-F1 %", "params (M)", "train time (s)", "epochs", "images/s"]
    return _table(header, [
        [r["experiment"], str(r["n"]), *(_pct(r[f"{k}_mean"], r[f"{k}_std"]) for k in SCORES),
         _num(r["params"] / 1e6, ".2f"), _num(r["train_time_s"], ".1f"), _num(r["epochs"], ".1f"),
         _num(r["train/images_per_s"], ".0f")] for r in summary])


def per_class_table(summary: list[dict[str, Any]]) -> str:
    return _table(["experiment", *EMOTIONS], [[r["experiment"], *(_pct(r[class_key("test", c)]) for c in EMOTIONS)]
                                              for r in summary])


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Figure, np.ndarray]:
    """Agg canvas without pyplot: no global backend switch, so a notebook importing this keeps inline plots."""
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols)).ravel()


def _colours(n: int) -> list[tuple[float, ...]]:
    return [colormaps["tab10"](i % 10) for i in range(n)]


def curves_figure(runs: list[Run], summary: list[dict[str, Any]]) -> Figure | None:
    if not any(r.curves["epoch"] for r in runs):
        return None
    groups = group_runs(runs)
    fig, axes = _figure(12, 4.5, 1, 2)
    for colour, row in zip(_colours(len(summary)), summary):
        logged = [run for run in groups[row["experiment"]] if run.curves["epoch"]]
        for ax, key in zip(axes, ("train/acc", "val/acc")):
            per_epoch: dict[float, list[float]] = defaultdict(list)  # seeds may stop early at different epochs
            for run in logged:
                for epoch, value in zip(run.curves["epoch"], run.curves[key]):
                    if math.isfinite(value):
                        per_epoch[epoch].append(value)
            epochs = sorted(per_epoch)
            if epochs:
                ax.plot(epochs, [np.mean(per_epoch[e]) for e in epochs], color=colour, marker="o", markersize=3,
                        label=f"{row['experiment']} (n={len(logged)})")
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
               color=colour, label=row["experiment"])
    ax.set_xticks(x, EMOTIONS)
    ax.set(ylim=(0, 1), ylabel="accuracy (recall), mean over seeds", title="PrivateTest accuracy per class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    return fig


def confusion_figure(runs: list[Run], summary: list[dict[str, Any]]) -> Figure | None:
    """Counts summed over seeds, then row-normalised: per-class recall, readable despite FER's imbalance."""
    groups = {row["experiment"]: [r.confusion for r in group_runs(runs)[row["experiment"]] if r.confusion is not None]
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
    ax.set_xticks(x, [r["experiment"] for r in summary], rotation=20, ha="right")
    ax.set(ylim=(0, 1), ylabel="accuracy (mean ± std over seeds)", title="Accuracy per experiment")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def figures(runs: list[Run], summary: list[dict[str, Any]]) -> dict[str, Figure]:
    """PNG name -> figure; curves and confusion matrices are left out when no run logged them."""
    built = {"accuracy.png": accuracy_figure(summary), "curves.png": curves_figure(runs, summary),
             "per_class.png": per_class_figure(summary), "confusion_matrices.png": confusion_figure(runs, summary)}
    return {name: fig for name, fig in built.items() if fig is not None}


def best_line(summary: list[dict[str, Any]]) -> str:
    best = summary[0]
    return (f"Best on PublicTest: **{best['experiment']}** ({_pct(best['val/acc_mean'], best['val/acc_std'])} %); "
            f"its PrivateTest accuracy: {_pct(best['test/acc_mean'], best['test/acc_std'])} % "
            f"(n={best['n']} seeds; chosen on PublicTest only).")


def write_report(runs: list[Run], failed: list[FailedRun], out_dir: Path) -> Path:
    """Write report.md and its PNGs into `out_dir`; returns the path of report.md."""
    if not runs:
        raise ValueError("no finished runs to report on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    datasets = sorted({str(r.metrics.get("dataset")) for r in runs})
    lines = ["# Experiment comparison", ""]
    if any(r.metrics.get("synthetic") for r in runs):
        lines += [f"> **⚠ {SYNTHETIC_WARNING}** (procedurally drawn faces: a pipeline demo only)", ""]
    mixed = " (**mixed datasets: rows are not comparable**)" if len(datasets) > 1 else ""
    lines.append(f"Dataset: {', '.join(datasets)}{mixed}")
    # An Optuna search groups trials of one experiment: identical seeds mean the spread is not seed noise.
    lines += [f"\nNote: {r['experiment']} has {r['n']} runs but seeds {r['seeds']}: mean/std mix configurations."
              for r in summary if len(set(map(str, r["seeds"]))) < r["n"]]
    lines += ["", "val = PublicTest selects checkpoints and ranks experiments; test = PrivateTest is reported only.",
              "", best_line(summary), "", "## Accuracy and cost (mean ± std over seeds)", "", markdown_table(summary),
              "", "## PrivateTest accuracy per class % (mean over seeds)", "", per_class_table(summary), "",
              f"## Failed jobs ({len(failed)})", "", *(["None."] if not failed else [])]
    for job in failed:  # parent/name: unique even across several multiruns, and short
        lines.append(f"- `{job.dir.parent.name}/{job.dir.name}` (no metrics.json: crashed, killed or unfinished): "
                     f"overrides `{' '.join(job.overrides) or 'unknown'}`")
        if job.log_tail:
            lines += ["", "  ```", *(f"  {line}" for line in job.log_tail.splitlines()), "  ```"]
    lines += ["", "## Figures", ""]
    saved = figures(runs, summary)
    for name, fig in saved.items():
        fig.savefig(out_dir / name)
        lines += [f"![{name[:-4]}]({name})", ""]
    lines += [f"No {name[:-4].replace('_', ' ')}: no run wrote {source}.\n" for name, source in
              (("curves.png", "csv/metrics.csv (CSV logger off)"), ("confusion_matrices.png", "confusion_matrix.json"))
              if name not in saved]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
