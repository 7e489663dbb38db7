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
                          fontsize: float = 7, row_names: Sequence[str] | None = None) -> AxesImage:
    """Row-normalised confusion matrix (recall per true class) on `ax`, readable for imbalanced data.

    Rows are true classes, columns predictions; cells show the recall fraction and, optionally, raw counts.
    `row_names` (default `class_names`) labels the rows when only some true classes are shown: a set without
    neutral faces (CK+) gets no empty neutral row, while its faces read as neutral still show in that column.
    """
    row_names = class_names if row_names is None else row_names
    counts = np.asarray(matrix, dtype=np.int64)
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(np.arange(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(row_names)), row_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, j in np.ndindex(recall.shape):
        text = f"{recall[i, j]:.2f}\n({counts[i, j]})" if show_counts else f"{recall[i, j]:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                color="white" if recall[i, j] > 0.5 else "black")
    return image


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str,
                            row_names: Sequence[str] | None = None) -> Figure:
    # Figure + Agg canvas, not pyplot: works headless and never changes a notebook's backend or leaks figures.
    rows = len(class_names if row_names is None else row_names)
    fig = Figure(figsize=(7, 1.6 + 0.63 * rows), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = draw_confusion_matrix(ax, matrix, class_names, row_names=row_names)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str, path: Path,
                          row_names: Sequence[str] | None = None) -> Path:
    fig = confusion_matrix_figure(matrix, class_names, title, row_names)
    fig.savefig(path)
    return Path(path)
