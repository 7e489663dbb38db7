"""The metrics every number of this project is made of, defined once.

Training (`FERClassifier`), re-evaluation (`python -m fer_lightning.evaluate`), the comparison report and the
shipped model's card all go through these functions, so a checkpoint re-evaluated with ``tta=none`` reproduces
its training run's ``metrics.json`` exactly, and a key written by one is read by the others.

Accuracy alone hides what FER2013 does to a classifier (16x more happy than disgust faces), so macro-F1 and
per-class accuracy (recall) are always computed beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the report reads metric names without loading it
    import torch
    from torchmetrics import MetricCollection

SCORES = ("acc", "f1_macro")  # the per-split scores, `<split>/acc` and `<split>/f1_macro`
OBJECTIVE = "val/acc_best"  # what selection and sweeps maximise: the best PublicTest accuracy so far


def metric_key(split: str, name: str) -> str:
    """`val/acc`, `test/f1_macro`: the one spelling of a split's metric (the sweep objective is `val/acc_best`)."""
    return f"{split}/{name}"


def class_key(split: str, class_name: str) -> str:
    """`test/acc_disgust`: a class's accuracy (its recall) on a split."""
    return f"{split}/acc_{class_name}"


def stage_metrics(num_classes: int) -> MetricCollection:
    """The torchmetrics a split is scored with: accuracy, macro-F1, per-class accuracy and the confusion matrix."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "acc_per_class": MulticlassAccuracy(num_classes, average=None),
        "confusion": MulticlassConfusionMatrix(num_classes),
    })


def named_values(computed: Mapping[str, torch.Tensor], class_names: Sequence[str],
                 split: str) -> dict[str, torch.Tensor]:
    """`stage_metrics(...).compute()` under its logged names (`<split>/acc`, `<split>/f1_macro`, `<split>/acc_<c>`)."""
    values = {metric_key(split, name): computed[name] for name in SCORES}
    values.update({class_key(split, name): acc for name, acc in zip(class_names, computed["acc_per_class"])})
    return values


def split_metrics(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], split: str) -> dict[str, float]:
    """The metrics of one split's predicted probabilities (or logits), as training logs them."""
    import torch

    collection = stage_metrics(len(class_names))
    collection.update(torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)),
                      torch.from_numpy(np.asarray(labels, dtype=np.int64)))
    return {key: float(value) for key, value in named_values(collection.compute(), class_names, split).items()}


def present_class_metrics(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                          prefix: str) -> dict[str, float]:
    """The metrics of a face set that lacks some of the model's classes (CK+ has no neutral), under `prefix`.

    Accuracy is the model's own verdict (argmax over all its classes: a CK+ face read as neutral is wrong, as the
    emotion finder would be); per-class accuracy and macro-F1 cover only the classes the set has faces of, since
    a class without faces has no recall and, counted, would put a 0 into the F1 mean whatever the model did.
    On a set with every class this equals `split_metrics`.
    """
    return present_class_metrics_of_predictions(np.asarray(probs).argmax(axis=1), labels, class_names, prefix)


NO_PREDICTION = -1  # a face the finder gave no label (no face detected): wrong, and no class's false positive


def present_class_metrics_of_predictions(predicted: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                                         prefix: str) -> dict[str, float]:
    """`present_class_metrics` from predicted class ids, where `NO_PREDICTION` marks an image without an answer
    (the finder's records of a photo where no face was found): it lowers accuracy and its class's recall, as a
    user would count it, without being credited to or charged against any other class."""
    predicted = np.asarray(predicted, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    f1 = []
    for index in present:
        true_positive = np.sum((predicted == index) & (labels == index))
        wrong = np.sum((predicted == index) != (labels == index))  # false positives + false negatives
        f1.append(2 * true_positive / (2 * true_positive + wrong))
    values = {metric_key(prefix, "acc"): float((predicted == labels).mean()),
              metric_key(prefix, "f1_macro"): float(np.mean(f1))}
    for index in present:
        values[class_key(prefix, class_names[index])] = float((predicted[labels == index] == index).mean())
    return values


def confusion_matrix(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows true classes and columns predictions (as `stage_metrics`' confusion matrix)."""
    predicted = np.asarray(probs).argmax(axis=1)
    flat = np.asarray(labels, dtype=np.int64) * num_classes + predicted
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
