"""Figures a run writes (and later reports reuse)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage


def draw_confusion_matrix(ax: Axes, matrix: np.ndarray, class_names: Sequence[str], show_counts: bool = True,
                          fontsize: float = 7) -> AxesImage:
    """Row-normalised confusion matrix (recall per true class) on `ax`, readable for imbalanced data.

    Rows are true classes, columns predictions; cells show the recall fraction and, optionally, raw counts.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, j in np.ndindex(recall.shape):
        text = f"{recall[i, j]:.2f}\n({counts[i, j]})" if show_counts else f"{recall[i, j]:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                color="white" if recall[i, j] > 0.5 else "black")
    return image


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    # Figure + Agg canvas, not pyplot: works headless and never changes a notebook's backend or leaks figures.
    fig = Figure(figsize=(7, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = draw_confusion_matrix(ax, matrix, class_names)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    fig = confusion_matrix_figure(matrix, class_names, title)
    fig.savefig(path)
    return Path(path)
