"""Figures a run writes (and later reports reuse)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs on servers and in CI: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix (recall per true class) with raw counts, readable for imbalanced data."""
    counts = np.asarray(matrix, dtype=np.int64)
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{recall[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if recall[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    fig = confusion_matrix_figure(matrix, class_names, title)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
