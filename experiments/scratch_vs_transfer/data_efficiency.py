"""The data-efficiency table and figure: accuracy against the number of training faces, one line per arm.

    python experiments/scratch_vs_transfer/data_efficiency.py experiments/scratch_vs_transfer/data_efficiency \
        [--extra experiments/cross_dataset/results/standard.json] [--figure data_efficiency.png]

Reads every metrics.json copy in the folder (written by `run_data_efficiency.sh`), plus `--extra` files of the same
recipe (the 100% compact CNN point is the `standard` row of the robust-training ablations: same config, epochs and
seed). Runs are grouped by arm (`experiment`) and training faces; seeds are averaged, with their spread shown. Each run
was selected on PublicTest; PrivateTest and CK+ dev are only reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

ARM_NAMES = {
    "cpu_budget": "compact CNN, scratch",
    "scratch_cnn": "seed CNN, scratch",
    "efficientnet_lite0_probe": "Lite0 ImageNet, linear probe",
    "efficientnet_lite0": "Lite0 ImageNet, full fine-tuning",
    "efficientnet_lite0_staged": "Lite0 ImageNet, staged fine-tuning",
    "efficientnet_lite0_random": "Lite0, random init",
}
METRICS = {"PublicTest": "val/acc_best", "PrivateTest": "test/acc", "CK+ dev": "test/ckplus/acc"}


def load(paths: list[Path]) -> dict[tuple[str, int], list[dict]]:
    """Runs keyed by (arm, training faces); a run cut before its last epoch is refused, not averaged in."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for path in paths:
        metrics = json.loads(path.read_text())
        if metrics.get("truncated"):
            raise SystemExit(f"{path}: a truncated run ({metrics['truncated']}); finish it before tabulating")
        metrics["file"] = path.name
        groups[(metrics["experiment"], int(metrics["train_images"]))].append(metrics)
    return groups


def _cell(runs: list[dict], key: str) -> str:
    values = [100 * r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown(groups: dict[tuple[str, int], list[dict]]) -> str:
    header = ["arm", "training faces (share)", "epochs", "seeds", *METRICS, "CK+ disgust", "train min (each)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for (arm, faces), runs in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        minutes = ", ".join("n/a" if r.get("train_time_s") is None else f"{r['train_time_s'] / 60:.1f}" for r in runs)
        cells = [ARM_NAMES.get(arm, arm), f"{faces:,} ({runs[0]['train_fraction']:.0%})", str(runs[0]["epochs"]),
                 ",".join(str(r["seed"]) for r in runs), *(_cell(runs, key) for key in METRICS.values()),
                 _cell(runs, "test/ckplus/acc_disgust"), minutes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(groups: dict[tuple[str, int], list[dict]], path: Path) -> None:
    arms = sorted({arm for arm, _ in groups})
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.2), sharey=True)
    for ax, (title, key) in zip(axes, METRICS.items(), strict=True):
        for arm in arms:
            points = sorted((faces, [100 * r[key] for r in runs if r.get(key) is not None])
                            for (a, faces), runs in groups.items() if a == arm)
            points = [(faces, values) for faces, values in points if values]
            if not points:
                continue
            xs = [faces for faces, _ in points]
            means = [statistics.mean(values) for _, values in points]
            ax.plot(xs, means, marker="o", label=ARM_NAMES.get(arm, arm))
            for faces, values in points:
                if len(values) > 1:
                    ax.plot([faces] * len(values), values, linestyle="none", marker="_", color="gray")
        ax.set_xscale("log")
        ticks = sorted({faces for _, faces in groups})
        ax.set_xticks(ticks, [f"{faces / 1000:.1f}k" for faces in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(f"{title} accuracy (%)")
        ax.set_xlabel("training faces (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels, where it hides no point
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle("FER2013 data efficiency: 15 epochs, selected on PublicTest (chance 14%)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="more metrics.json files of the recipe")
    parser.add_argument("--figure", type=Path, help="write the curves here (PNG)")
    args = parser.parse_args()
    groups = load(sorted(args.folder.glob("*.json")) + list(args.extra))
    print(markdown(groups))
    if args.figure:
        figure(groups, args.figure)


if __name__ == "__main__":
    main()
