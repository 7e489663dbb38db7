"""`fer_lightning.report`: summaries, report.md and figures from run directories with known numbers.

The fixture runs mimic what `train()` writes (metrics.json, a sparse CSVLogger file, confusion_matrix.json) and
what Hydra leaves behind for a crashed job, so the report is tested against the real layout without training.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_lightning.labels import EMOTIONS
from fer_lightning.reporting import (
    Run,
    best_line,
    collect_runs,
    confusion_figure,
    read_curves,
    result_overrides,
    run_kind,
    summarize,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
REVALIDATION_ACC = 0.999  # the after-fit re-validation value: must never show up in a learning curve
# experiment -> (pretrained, params, train_time_s, images/s, {seed: (val/acc, test/acc)}).
# The transfer arm wins on PublicTest but loses on PrivateTest, so sorting by test would flip the order.
EXPERIMENTS: dict[str, tuple[bool, int, float, float, dict[int, tuple[float, float]]]] = {
    "scratch_cnn": (False, 4_500_000, 100.0, 2000.0, {1: (0.60, 0.58), 2: (0.62, 0.60), 3: (0.64, 0.62)}),
    "efficientnet_lite0": (True, 3_400_000, 300.0, 700.0, {1: (0.70, 0.57), 2: (0.66, 0.55)}),
}
FAILED_OVERRIDES = ["+experiment=efficientnet_lite0", "seed=3"]


def per_class(acc: float) -> dict[str, float]:
    """Per-class accuracies that differ by class (disgust lowest, happy highest, as on FER2013)."""
    offsets = {"angry": -0.05, "disgust": -0.3, "fear": -0.15, "happy": 0.25, "sad": -0.1, "surprise": 0.15,
               "neutral": 0.0}
    return {c: round(acc + offsets[c], 4) for c in EMOTIONS}


def val_curve(final_val: float) -> list[float]:
    return [round(final_val - 0.1 * (EPOCHS - 1 - e), 4) for e in range(EPOCHS)]


def train_curve(final_val: float) -> list[float]:
    return [round(final_val - 0.15 + 0.1 * e, 4) for e in range(EPOCHS)]


def _write_metrics_csv(path: Path, final_val: float, test_acc: float, revalidate_next_epoch: bool) -> None:
    """Rows as Lightning's CSVLogger writes them: one per logging call, empty cells for absent keys."""
    columns = ["epoch", "lr-AdamW", "step", "test/acc", "test/f1_macro", "test/loss", "train/acc", "train/loss_epoch",
               "train/loss_step", "val/acc", "val/f1_macro", "val/loss"]
    rows: list[dict[str, object]] = []
    for epoch in range(EPOCHS):
        step = (epoch + 1) * 10 - 1
        rows.append({"lr-AdamW": 1e-3 / (epoch + 1), "step": epoch * 10})
        rows.append({"epoch": epoch, "step": step - 5, "train/loss_step": 1.5})
        rows.append({"epoch": epoch, "step": step, "val/acc": val_curve(final_val)[epoch], "val/f1_macro": 0.4,
                     "val/loss": 1.2})
        rows.append({"epoch": epoch, "step": step, "train/acc": train_curve(final_val)[epoch],
                     "train/loss_epoch": 1.1})
    last = EPOCHS if revalidate_next_epoch else EPOCHS - 1  # Lightning logs either, depending on how fit ended
    rows.append({"epoch": last, "step": EPOCHS * 10, "val/acc": REVALIDATION_ACC, "val/loss": 0.9})
    rows.append({"epoch": last, "step": EPOCHS * 10, "test/acc": test_acc, "test/f1_macro": 0.5, "test/loss": 1.0})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_fixture_runs(root: Path, synthetic: bool = False) -> Path:
    """A multirun dir: 2 experiments x 2-3 seeds, finished, plus two failed jobs (one with a train.log)."""
    dataset = "synthetic" if synthetic else "fer2013"
    job = 0
    for experiment, (pretrained, params, seconds, speed, seeds) in EXPERIMENTS.items():
        for seed, (val_acc, test_acc) in seeds.items():
            run = root / f"{job}_{dataset}_{experiment}"
            (run / ".hydra").mkdir(parents=True)
            (run / ".hydra" / "overrides.yaml").write_text(f"- +experiment={experiment}\n- seed={seed}\n")
            metrics = {
                "experiment": experiment, "backbone": experiment, "pretrained": pretrained, "finetune": "full",
                "seed": seed, "dataset": dataset, "synthetic": synthetic, "params": params, "epochs": EPOCHS,
                "train_time_s": seconds, "train/images_per_s": speed, "val/acc": val_acc,
                "val/acc_best": val_acc, "val/f1_macro": val_acc - 0.05, "test/acc": test_acc,
                "test/f1_macro": test_acc - 0.05, "test/loss": 1.0, "class_names": list(EMOTIONS),
                **{f"test/acc_{c}": v for c, v in per_class(test_acc).items()},
                **{f"val/acc_{c}": v for c, v in per_class(val_acc).items()},
                "output_dir": str(run),
            }
            (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
            _write_metrics_csv(run / "csv" / "metrics.csv", val_acc, test_acc,
                               revalidate_next_epoch=experiment == "scratch_cnn")
            confusion = np.full((7, 7), seed) + np.diag(np.arange(1, 8) * 10)
            (run / "confusion_matrix.json").write_text(json.dumps(confusion.tolist()))
            job += 1
    crashed = root / f"{job}_{dataset}_efficientnet_lite0"
    (crashed / ".hydra").mkdir(parents=True)
    (crashed / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in FAILED_OVERRIDES))
    oom = root / f"{job + 1}_{dataset}_scratch_cnn"
    (oom / ".hydra").mkdir(parents=True)
    (oom / ".hydra" / "overrides.yaml").write_text("- +experiment=scratch_cnn\n- seed=4\n")
    (oom / "train.log").write_text("[INFO] - starting\n" * 30 + "RuntimeError: CUDA out of memory\n")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return write_fixture_runs(tmp_path / "multirun")


def test_collect_runs_reads_every_job_and_lists_failures(runs_dir: Path) -> None:
    runs, failed = collect_runs(runs_dir)
    assert len(runs) == 5
    assert sorted(f.dir.name for f in failed) == ["5_fer2013_efficientnet_lite0", "6_fer2013_scratch_cnn"]
    by_name = {f.dir.name: f for f in failed}
    assert by_name["5_fer2013_efficientnet_lite0"].overrides == FAILED_OVERRIDES
    tail = by_name["6_fer2013_scratch_cnn"].log_tail
    assert tail.endswith("RuntimeError: CUDA out of memory") and len(tail.splitlines()) < 31
    assert all(run.confusion is not None and run.confusion.shape == (7, 7) for run in runs)


def test_collect_runs_searches_nested_multiruns(tmp_path: Path) -> None:
    write_fixture_runs(tmp_path / "sweeps" / "a")
    write_fixture_runs(tmp_path / "sweeps" / "b")
    runs, failed = collect_runs(tmp_path / "sweeps")
    assert (len(runs), len(failed)) == (10, 4)


@pytest.mark.parametrize("next_epoch", [True, False])
def test_curves_keep_the_training_epochs_and_skip_the_revalidation(tmp_path: Path, next_epoch: bool) -> None:
    path = tmp_path / "metrics.csv"
    _write_metrics_csv(path, 0.6, 0.5, revalidate_next_epoch=next_epoch)
    curves = read_curves(path)
    assert curves["epoch"] == [0.0, 1.0, 2.0]
    assert curves["val/acc"] == pytest.approx(val_curve(0.6))
    assert curves["train/acc"] == pytest.approx(train_curve(0.6))
    assert REVALIDATION_ACC not in curves["val/acc"]


def test_summary_means_stds_and_order_by_publictest(runs_dir: Path) -> None:
    rows = summarize(collect_runs(runs_dir)[0])
    # Sorted on PublicTest: efficientnet first although scratch_cnn is better on PrivateTest.
    assert [r["experiment"] for r in rows] == ["efficientnet_lite0", "scratch_cnn"]
    eff, scratch = rows
    assert (eff["n"], scratch["n"]) == (2, 3)
    assert eff["val/acc_mean"] == pytest.approx(0.68) and eff["val/acc_std"] == pytest.approx(math.sqrt(0.0008))
    assert eff["test/acc_mean"] == pytest.approx(0.56)
    assert scratch["val/acc_mean"] == pytest.approx(0.62) and scratch["val/acc_std"] == pytest.approx(0.02)
    assert scratch["test/acc_mean"] == pytest.approx(0.60) and scratch["test/acc_std"] == pytest.approx(0.02)
    assert scratch["test/f1_macro_mean"] == pytest.approx(0.55)
    assert eff["val_test_gap"] == pytest.approx(0.12) and scratch["val_test_gap"] == pytest.approx(0.02)
    assert (eff["params"], eff["train_time_s"], eff["epochs"], eff["train/images_per_s"]) == (3.4e6, 300, 3, 700)
    assert scratch["test/acc_happy"] == pytest.approx(0.85) and scratch["test/acc_disgust"] == pytest.approx(0.30)
    assert sorted(scratch["seeds"]) == [1, 2, 3]


def test_one_seed_has_zero_std(tmp_path: Path) -> None:
    root = write_fixture_runs(tmp_path / "m")
    for run in root.glob("[1-2]_*_scratch_cnn"):
        (run / "metrics.json").unlink()
    scratch = next(r for r in summarize(collect_runs(root)[0]) if r["experiment"] == "scratch_cnn")
    assert scratch["n"] == 1 and scratch["val/acc_std"] == 0.0


def test_report_markdown_and_figures(runs_dir: Path, tmp_path: Path) -> None:
    runs, failed = collect_runs(runs_dir)
    report = write_report(runs, failed, tmp_path / "out")
    text = report.read_text()
    assert report == tmp_path / "out" / "report.md"
    assert "SYNTHETIC" not in text
    assert ("| efficientnet_lite0 | 2 | 68.00 ± 2.83 | 56.00 ± 1.41 | 63.00 ± 2.83 | 51.00 ± 1.41 | 3.40 | 300.0 "
            "| 3.0 | 700 |") in text
    assert "| scratch_cnn | 3 | 62.00 ± 2.00 | 60.00 ± 2.00 |" in text
    assert text.index("| efficientnet_lite0 | 2") < text.index("| scratch_cnn | 3")
    assert "| scratch_cnn | 55.00 | 30.00 | 45.00 | 85.00 | 50.00 | 75.00 | 60.00 |" in text  # per-class table
    assert "Best on PublicTest: **efficientnet_lite0** (68.00 ± 2.83 %)" in text
    assert "PrivateTest accuracy: 56.00 ± 1.41 %" in text
    assert "## Failed jobs (2)" in text and "5_fer2013_efficientnet_lite0" in text
    assert "+experiment=efficientnet_lite0 seed=3" in text and "CUDA out of memory" in text
    for name in ("curves.png", "per_class.png", "confusion_matrices.png", "accuracy.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000, name
        assert f"]({name})" in text


def test_synthetic_runs_carry_the_warning_first(tmp_path: Path) -> None:
    runs, failed = collect_runs(write_fixture_runs(tmp_path / "syn", synthetic=True))
    lines = write_report(runs, failed, tmp_path / "out").read_text().splitlines()
    assert "SYNTHETIC DATA: not FER2013 results" in "\n".join(lines[:3])
    assert "Dataset: synthetic" in lines


def test_confusion_plot_skips_experiments_without_matrix(runs_dir: Path) -> None:
    for path in runs_dir.glob("*efficientnet_lite0/confusion_matrix.json"):
        path.unlink()
    runs = collect_runs(runs_dir)[0]
    fig = confusion_figure(runs, summarize(runs))
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["scratch_cnn (n=3)"]
    for path in runs_dir.glob("*/confusion_matrix.json"):
        path.unlink()
    runs = collect_runs(runs_dir)[0]
    assert confusion_figure(runs, summarize(runs)) is None


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_lightning.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})


def test_cli_writes_report_into_the_multirun_dir(runs_dir: Path) -> None:
    result = _cli(str(runs_dir))
    assert result.returncode == 0, result.stderr
    assert (runs_dir / "report.md").is_file() and (runs_dir / "curves.png").is_file()
    assert str(runs_dir / "report.md") in result.stdout
    assert "| efficientnet_lite0 | 2 | 68.00 ± 2.83 |" in result.stdout


def test_cli_out_option(runs_dir: Path, tmp_path: Path) -> None:
    result = _cli(str(runs_dir), "--out", str(tmp_path / "elsewhere"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere" / "report.md").is_file() and not (runs_dir / "report.md").exists()


def test_cli_errors_name_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_multirun"
    result = _cli(str(missing))
    assert result.returncode != 0 and f"multirun directory not found: {missing}" in result.stderr
    empty = tmp_path / "empty"
    (empty / "0_fer2013_scratch_cnn" / ".hydra").mkdir(parents=True)
    result = _cli(str(empty))
    assert result.returncode != 0 and f"no metrics.json found under {empty}" in result.stderr
    assert "0_fer2013_scratch_cnn" in result.stderr
    with pytest.raises(FileNotFoundError, match="no_such_multirun"):
        collect_runs(missing)


def test_runs_without_csv_logs_say_why_there_are_no_curves(runs_dir: Path, tmp_path: Path) -> None:
    for path in runs_dir.glob("*/csv/metrics.csv"):
        path.unlink()
    runs, failed = collect_runs(runs_dir)
    text = write_report(runs, failed, tmp_path / "out").read_text()
    assert not (tmp_path / "out" / "curves.png").exists() and "No curves: no run wrote csv/metrics.csv" in text
    assert (tmp_path / "out" / "accuracy.png").is_file()


# --- A folder of unrelated runs (outputs/train/runs): grouped by data and configuration, debug/synthetic apart --

REAL = "/data/fer2013.zip"


def _write_run(root: Path, name: str, overrides: list[str], val_acc: float, test_acc: float, *,
               source: str = REAL, trainer: dict | None = None, synthetic: bool = False,
               truncated: dict[str, int] | None = None, unscored: tuple[str, ...] = ()) -> Path:
    """A run folder as `python -m fer_lightning` leaves it: metrics.json, config.yaml and .hydra/overrides.yaml."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    settings = {"max_epochs": 30, "limit_train_batches": 1.0, "limit_val_batches": 1.0, "limit_test_batches": 1.0,
                "fast_dev_run": False, "overfit_batches": 0.0, **(trainer or {})}
    (run / "config.yaml").write_text(json.dumps({"trainer": settings, "data": {"root": source}}))  # JSON is YAML
    total = 3589
    faces = {split: {"evaluated": (truncated or {}).get(split, total), "total": total} for split in ("val", "test")}
    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), 42)
    metrics = {
        "experiment": "compact_cnn", "backbone": "compact_cnn", "pretrained": False, "finetune": "full", "seed": seed,
        "dataset": "synthetic" if synthetic else "fer2013", "synthetic": synthetic, "source": source,
        "params": 1_000_000, "epochs": 3, "train_time_s": 10.0, "train/images_per_s": 1000.0,
        "val/acc": val_acc, "val/acc_best": val_acc, "val/f1_macro": val_acc - 0.05, "test/acc": test_acc,
        "test/f1_macro": test_acc - 0.05, **{f"test/acc_{c}": v for c, v in per_class(test_acc).items()},
        "eval_faces": faces, "truncated": [s for s in ("val", "test") if faces[s]["evaluated"] < total],
    }
    if truncated is None and trainer and "limit_test_batches" in trainer:  # written before eval_faces existed
        del metrics["eval_faces"], metrics["truncated"]
    metrics.update({f"test/acc_{c}": None for c in unscored})
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def write_mixed_runs(root: Path) -> Path:
    """Two seeds of one real configuration (with neutral overrides that differ), a shorter budget, a one-batch
    debug run, an old-format cut-down run, a synthetic demo and a run on another FER2013 file."""
    base = ["+experiment=compact_cnn", f"data.root={REAL}"]
    _write_run(root, "a_fer2013_compact_cnn", [*base, "seed=1"], 0.65, 0.66)
    _write_run(root, "b_fer2013_compact_cnn", [*base, "seed=2", "trainer.accelerator=cpu", "data.num_workers=2",
                                               "logger=csv", "hydra.run.dir=/tmp/x", "trainer=cpu"], 0.67, 0.68)
    _write_run(root, "c_fer2013_compact_cnn", [*base, "seed=1", "trainer.max_epochs=1"], 0.40, 0.41,
               trainer={"max_epochs": 1})
    _write_run(root, "d_fer2013_compact_cnn", [*base, "+debug=fdr"], 0.90, 0.92, trainer={"fast_dev_run": True},
               truncated={"val": 256, "test": 256}, unscored=("disgust", "sad"))
    _write_run(root, "e_fer2013_compact_cnn", [*base, "trainer.limit_val_batches=5", "trainer.limit_test_batches=5"],
               0.88, 0.89, trainer={"limit_val_batches": 5, "limit_test_batches": 5})
    _write_run(root, "f_synthetic_compact_cnn", ["data=synthetic", "+experiment=compact_cnn"], 0.95, 0.93,
               source="synthetic (seed 0, 3000/600/600 train/val/test faces)", synthetic=True)
    _write_run(root, "g_fer2013_compact_cnn", ["+experiment=compact_cnn", "data.root=/data/fer2013_clean.csv"],
               0.70, 0.69, source="/data/fer2013_clean.csv")
    return root


def test_unrelated_runs_are_grouped_by_data_and_configuration_never_averaged(tmp_path: Path) -> None:
    rows = summarize(collect_runs(write_mixed_runs(tmp_path / "runs"))[0])
    by_label = {row["label"]: row for row in rows}
    assert [row["kind"] for row in rows] == ["result"] * 3 + ["debug"] * 2 + ["synthetic"]
    real = by_label["compact_cnn @ fer2013.zip"]  # the two seeds, whatever device, workers or logger they used
    assert (real["n"], sorted(real["seeds"])) == (2, [1, 2])
    assert real["val/acc_mean"] == pytest.approx(0.66) and real["test/acc_mean"] == pytest.approx(0.67)
    assert by_label["compact_cnn [trainer.max_epochs=1] @ fer2013.zip"]["n"] == 1
    assert by_label["compact_cnn @ fer2013_clean.csv"]["val/acc_mean"] == pytest.approx(0.70)
    assert by_label["compact_cnn [debug=fdr] @ fer2013.zip"]["notes"] == (
        "debug: +debug=fdr, fast_dev_run; truncated val: 256 of 3589 faces, test: 256 of 3589 faces")
    old = by_label["compact_cnn [trainer.limit_test_batches=5 trainer.limit_val_batches=5] @ fer2013.zip"]
    assert old["kind"] == "debug" and "limit_test_batches=5" in old["notes"]
    assert by_label["compact_cnn @ synthetic"]["notes"] == "SYNTHETIC"
    assert all(row["n"] == 1 for row in rows if row is not real)


def test_best_is_a_result_per_data_source_never_a_debug_or_synthetic_run(tmp_path: Path) -> None:
    root = write_mixed_runs(tmp_path / "runs")
    runs, failed = collect_runs(root)
    lines = best_line(summarize(runs)).splitlines()  # debug (90 %) and synthetic (95 %) score higher
    assert lines == [
        f"Best on PublicTest ({REAL}): **compact_cnn @ fer2013.zip** (66.00 ± 1.41 %); its PrivateTest accuracy: "
        "67.00 ± 1.41 % (n=2 seeds; chosen on PublicTest only).",
        "Best on PublicTest (/data/fer2013_clean.csv): **compact_cnn @ fer2013_clean.csv** (70.00 ± 0.00 %); its "
        "PrivateTest accuracy: 69.00 ± 0.00 % (n=1 seeds; chosen on PublicTest only)."]
    text = write_report(runs, failed, tmp_path / "out").read_text()
    results, rest = text.split("## Debug and cut-down runs: not results (2)")
    assert f"## Results on {REAL}" in results and "## Results on /data/fer2013_clean.csv" in results
    assert "Best on PublicTest: **compact_cnn** (66.00 ± 1.41 %)" in results
    assert "| compact_cnn [trainer.max_epochs=1] | 1 | 40.00 ± 0.00 |" in results
    assert text.count("Best on PublicTest") == 2 and "Best on PublicTest" not in rest
    debug, synthetic = rest.split("## Synthetic runs: not FER2013 results (1)")
    assert "| compact_cnn [debug=fdr] | 1 | 90.00 ± 0.00 |" in debug and "fast_dev_run" in debug
    assert "| compact_cnn [debug=fdr] | 87.00 | n/a | 77.00 | 117.00 | n/a |" in debug  # no disgust, sad scored
    assert "| compact_cnn | 1 | 95.00 ± 0.00 |" in synthetic and "SYNTHETIC" in text.splitlines()[2]


def test_only_debug_and_synthetic_runs_name_no_best(tmp_path: Path) -> None:
    root = write_mixed_runs(tmp_path / "runs")
    for name in ("a", "b", "c", "g"):
        shutil.rmtree(root / f"{name}_fer2013_compact_cnn")
    runs, failed = collect_runs(root)
    text = write_report(runs, failed, tmp_path / "out").read_text()
    assert "Best on PublicTest" not in text and "No full FER2013 result among these runs" in text
    assert "## Figures (debug or synthetic runs: not results)" in text


def test_cli_on_a_runs_folder_marks_debug_and_synthetic_rows(tmp_path: Path) -> None:
    result = _cli(str(write_mixed_runs(tmp_path / "runs")))
    assert result.returncode == 0, result.stderr
    table = {line.split(" | ")[0].lstrip("| "): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert table["compact_cnn @ fer2013.zip"].endswith("|  |")  # a full result: no note
    assert "SYNTHETIC" in table["compact_cnn @ synthetic"]
    assert "truncated val: 256 of 3589 faces, test: 256 of 3589 faces" in table["compact_cnn [debug=fdr] @ fer2013.zip"]


@pytest.mark.parametrize(("overrides", "expected"), [
    (["seed=3", "logger=wandb", "hydra.launcher.n_jobs=2", "paths.log_dir=/x", "trainer.devices=2", "data=fer2013",
      "data.root=a.zip", "data.num_workers=4", "callbacks.progress_bar=null", "trainer=ddp_cpu", "+launcher=slurm"],
     []),
    (["+experiment=vgg", "++model.optimizer.lr=0.01", "trainer.max_epochs=3", "~callbacks.early_stopping",
      "data.batch_size=32", "trainer.limit_train_batches=150"],
     ["data.batch_size=32", "experiment=vgg", "model.optimizer.lr=0.01", "trainer.limit_train_batches=150",
      "trainer.max_epochs=3", "~callbacks.early_stopping"]),
])
def test_only_overrides_that_change_results_split_groups(overrides: list[str], expected: list[str]) -> None:
    run = Run(dir=Path("x"), metrics={}, curves={}, overrides=overrides)
    assert result_overrides(run) == expected
    assert run_kind(run) == "result"  # a training budget (limit_train_batches) is a configuration, not a debug run
