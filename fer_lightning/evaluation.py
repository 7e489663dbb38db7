"""Re-evaluating checkpoints: test-time augmentation (TTA) and ensembles, on the splits training used.

`evaluate(cfg)` is pure with respect to Hydra (like `train`): it reads everything, including
`paths.output_dir`, from `cfg`, so tests and notebooks call it with a composed config. The command
`python -m fer_lightning.evaluate` (`fer_lightning/cli/evaluate.py`) only adds the run directory and logging.

Every number is reported with and without TTA in one run, and for each ensemble member as well as for the
ensemble, so a gain is always measured against its own baseline. PublicTest (val) is where a TTA mode or an
ensemble is chosen; PrivateTest (test) is only reported.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

import fer_lightning  # noqa: F401  (registers the resolvers the configs use)
from fer_lightning.checkpoints import CheckpointNotFoundError, read_checkpoint_meta
from fer_lightning.checkpoints import check_class_names as check_expected_classes
from fer_lightning.data.folder_faces import instantiate_extra_tests
from fer_lightning.errors import UsageError
from fer_lightning.inference.base import EmotionClassifier
from fer_lightning.inference.classifier import load_classifier
from fer_lightning.labels import EMOTIONS
from fer_lightning.metrics import confusion_matrix, present_class_metrics, split_metrics
from fer_lightning.plots import save_confusion_matrix
from fer_lightning.tta import check_class_names, check_mode, default_crop_size, ensemble_proba, predict_proba_tta

if TYPE_CHECKING:
    from fer_lightning.data.datamodule import FERDataModule
    from fer_lightning.data.folder_faces import LabelledFaces

log = logging.getLogger("fer_lightning.evaluate")  # not "__main__" under python -m

EVAL_SPLITS: tuple[str, ...] = ("train", "val", "test")
NO_TTA = "no_tta/"


def _count_models(ckpt_paths: Any) -> int:
    """`${fer_num_models:${ckpt_paths}}` in the run dir name: a single path (a string) counts as one model."""
    if isinstance(ckpt_paths, (list, tuple, ListConfig)):
        return len(ckpt_paths)
    return 0 if ckpt_paths in (None, "") else 1


if not OmegaConf.has_resolver("fer_num_models"):
    OmegaConf.register_new_resolver("fer_num_models", _count_models)


def evaluate_splits(classifiers: Sequence[EmotionClassifier], data: dict[str, tuple[np.ndarray, np.ndarray]],
                    tta: str = "none", crop_sizes: Sequence[int | None] | None = None, batch_size: int = 512,
                    sources: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics and final (ensembled, TTA-averaged) probabilities of in-memory splits `{name: (faces, labels)}`.

    The file-free core of :func:`evaluate`, for data that is no file (synthetic faces, a notebook's subset).
    Metrics: `<split>/*` for the ensemble with `tta`, `no_tta/<split>/*` without (when `tta` is not none), and
    the same per member under `per_model`. Returns (metrics, {split: probabilities}). An extra test set's key is
    `test/<name>` (see `extra_test_key`); it is scored over the classes it has (`present_class_metrics`).
    """
    check_mode(tta)
    sources = list(sources) if sources is not None else [f"model {i}" for i in range(len(classifiers))]
    crop_sizes = list(crop_sizes) if crop_sizes is not None else [None] * len(classifiers)
    class_names = [tuple(c.class_names) for c in classifiers]
    names = class_names[0]
    modes = [tta] if tta == "none" else [tta, "none"]
    metrics: dict[str, Any] = {}
    per_model: list[dict[str, Any]] = [{"ckpt_path": source} for source in sources]
    final_probs: dict[str, np.ndarray] = {}
    for split, (faces, labels) in data.items():
        for mode in modes:
            prefix = split if mode == tta else NO_TTA + split
            probs = []
            score = split_metrics if split in EVAL_SPLITS else present_class_metrics
            for i, (classifier, crop) in enumerate(zip(classifiers, crop_sizes)):
                probs.append(predict_proba_tta(classifier, faces, mode, crop_size=crop, batch_size=batch_size))
                per_model[i].update(score(probs[-1], labels, names, prefix))
            combined = ensemble_proba(probs, class_names, sources)
            metrics.update(score(combined, labels, names, prefix))
            if mode == tta:
                final_probs[split] = combined
    metrics["per_model"] = per_model
    return metrics, final_probs


def extra_test_key(name: str) -> str:
    """`test/ckplus`: an extra test set's metric prefix (`test/ckplus/acc`), a kind of test split, reported only."""
    return f"test/{name}"


def score_extra_tests(classifiers: Sequence[EmotionClassifier], test_sets: Sequence[LabelledFaces],
                      tta: str = "none", crop_sizes: Sequence[int | None] | None = None, batch_size: int = 512,
                      sources: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`evaluate_splits` on extra test sets, plus what each covers (`extra_test` in metrics.json): the one
    scoring path for training's final test and for `python -m fer_lightning.evaluate extra_test=...`."""
    data = {extra_test_key(faces.name): (faces.images, faces.labels) for faces in test_sets}
    metrics, probs = evaluate_splits(classifiers, data, tta, crop_sizes, batch_size, sources)
    metrics["extra_test"] = {faces.name: faces.describe() for faces in test_sets}
    return metrics, probs


def save_extra_test_figures(metrics: dict[str, Any], probs: dict[str, np.ndarray], test_sets: Sequence[LabelledFaces],
                            class_names: Sequence[str], output_dir: Path, what: str) -> None:
    """`confusion_matrix_<name>.png` (rows: the set's classes) and `.json` (all classes) per extra test set."""
    for faces in test_sets:
        key = extra_test_key(faces.name)
        matrix = confusion_matrix(probs[key], faces.labels, len(class_names))
        (output_dir / f"confusion_matrix_{faces.name}.json").write_text(json.dumps(matrix.tolist()) + "\n")
        rows = [class_names.index(name) for name in faces.classes]
        title = (f"{faces.name} ({len(faces.labels)} faces, cross-dataset, reported only), {what}\n"
                 f"accuracy {metrics[f'{key}/acc']:.4f}, macro-F1 over its {len(rows)} classes "
                 f"{metrics[f'{key}/f1_macro']:.4f}")
        save_confusion_matrix(matrix[rows], class_names, title, output_dir / f"confusion_matrix_{faces.name}.png",
                              row_names=[class_names[i] for i in rows])


# --- Inputs ---------------------------------------------------------------------------------------------------

def checkpoint_paths(value: Any) -> list[Path]:
    """`ckpt_paths` as a list whether given as one path or a list; every file must exist, all named at once."""
    if value is None or value == "":
        raise UsageError("ckpt_paths is empty: give one checkpoint (ckpt_paths=PATH) or a list (ckpt_paths=[A,B])")
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not items:
        raise UsageError("ckpt_paths is an empty list: give at least one checkpoint")
    paths = [Path(str(item)).expanduser() for item in items]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise CheckpointNotFoundError(f"checkpoint not found: {', '.join(missing)} (ckpt_paths)")
    return paths


def check_splits(splits: Any) -> list[str]:
    names = [splits] if isinstance(splits, str) else list(splits)
    unknown = [name for name in names if name not in EVAL_SPLITS]
    if unknown or not names:
        raise UsageError(f"splits must be a non-empty list of {', '.join(EVAL_SPLITS)}; got {names}")
    return list(dict.fromkeys(names))


def _device(requested: str | None) -> str:
    import torch

    if not requested:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(requested).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={requested} but CUDA is not available here; use device=cpu")
    return str(requested)


def load_eval_data(data_cfg: DictConfig) -> FERDataModule:
    """The datamodule of `data_cfg` (training's `data` group), set up: its splits exactly as training saw them.

    Built from the same config node as in training rather than re-reading the source, so a source without
    PublicTest gets the very same carved val split (same `val_fraction`, `split_seed`) and the same reader policy.
    """
    from hydra.utils import instantiate

    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def _warn_on_data_mismatch(paths: Sequence[Path], classifiers: Sequence[EmotionClassifier], val_source: str) -> None:
    """A checkpoint records the data it was trained on; evaluating it elsewhere is allowed, but said loudly."""
    for path, classifier in zip(paths, classifiers):
        if path.suffix.lower() == ".onnx":
            continue
        meta = getattr(classifier, "checkpoint_meta", None) or read_checkpoint_meta(path)
        trained_on = meta.data
        if trained_on.get("synthetic"):
            log.warning("%s was trained on SYNTHETIC faces: its FER2013 numbers say little", path)
        recorded = trained_on.get("val_split")
        if recorded and recorded != val_source:
            log.warning("%s was selected on val split '%s', this evaluation's val split is '%s': val numbers "
                        "are not comparable (set data.val_fraction / data.split_seed as in training)",
                        path, recorded, val_source)


def model_label(path: Path) -> str:
    """Short, still-identifying name: checkpoints are `<run dir>/checkpoints/<file>`, so the run dir names them."""
    path = Path(path)
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


# --- The run --------------------------------------------------------------------------------------------------

def _split_name(split: str, official: bool) -> str:
    """FER2013's own names when the source has them; a carved val is not PublicTest and must not be called so."""
    return {"val": "PublicTest", "test": "PrivateTest"}.get(split, split) if official else split


def _split_title(split: str, official: bool) -> str:
    if split.startswith("test/"):
        return f"{split.removeprefix('test/')} (extra test set, reported only)"
    role = {"val": "selects", "test": "reported only"}.get(split)
    name = _split_name(split, official)
    return f"{name} ({split}, {role})" if name != split and role else (f"{split} ({role})" if role else split)


def results_table(metrics: dict[str, Any], splits: Sequence[str], tta: str, official: bool) -> str:
    """The console summary: accuracy and macro-F1 per split, with the TTA mode next to its no-TTA baseline.

    For an ensemble every member gets its own rows above the ensemble's, so the gain of averaging is read off the
    same table (the members' numbers are in metrics.json under `per_model` too).
    """
    columns = [f"acc ({tta})", f"macro-F1 ({tta})"]
    if tta != "none":
        columns += ["acc (no TTA)", "macro-F1 (no TTA)"]
    members = metrics.get("per_model") or []
    models = [(model_label(Path(member["ckpt_path"])), member) for member in members]
    models.append(("ensemble" if members else "model", metrics))
    rows = []
    for split in splits:
        for name, source in models:
            values = [source[f"{split}/acc"], source[f"{split}/f1_macro"]]
            if tta != "none":
                values += [source[f"{NO_TTA}{split}/acc"], source[f"{NO_TTA}{split}/f1_macro"]]
            row = [_split_title(split, official), str(metrics["num_faces"][split])] + [f"{v:.4f}" for v in values]
            rows.append(row[:1] + [name] + row[1:] if members else row)
    header = ["split", *(["model"] if members else []), "faces", *columns]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt_paths` (averaged if several) with `cfg.tta`; write metrics, probabilities and plots."""
    tta = check_mode(str(cfg.tta))
    splits = check_splits(cfg.get("splits", ["val", "test"]))
    if OmegaConf.is_missing(cfg, "ckpt_paths"):
        raise UsageError("ckpt_paths is required: ckpt_paths=PATH (one model) or ckpt_paths=[A,B] (an ensemble)")
    paths = checkpoint_paths(cfg.ckpt_paths)  # before any loading: a typo fails in a second, naming the file
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    device = _device(cfg.get("device"))

    classifiers = [load_classifier(path, device=device) for path in paths]
    sources = [str(path.resolve()) for path in paths]
    class_names = check_class_names([c.class_names for c in classifiers], sources)  # before loading data
    check_expected_classes(class_names, EMOTIONS, sources[0], purpose="scoring against FER2013 labels")
    requested_crop = cfg.get("tta_crop_size")
    crop_sizes = [int(requested_crop) if requested_crop is not None else default_crop_size(c.eval_transform)
                  for c in classifiers]

    datamodule = load_eval_data(cfg.data)
    all_splits, val_source = datamodule.splits, datamodule.val_source
    official = val_source == datamodule.official_val_source and not datamodule.is_synthetic
    _warn_on_data_mismatch(paths, classifiers, val_source)
    data = {split: all_splits[split] for split in splits}
    log.info("Evaluating %d model(s) with TTA '%s' on %s on %s. %s selects (choose TTA and ensemble members "
             "on it); %s is only reported.", len(paths), tta, ", ".join(splits), device,
             _split_name("val", official), _split_name("test", official))

    metrics, probs = evaluate_splits(classifiers, data, tta, crop_sizes if tta == "tencrop" else None,
                                     int(cfg.get("batch_size", 512)), sources)
    test_sets = [test_set.load() for test_set in instantiate_extra_tests(cfg.get("extra_test"))]
    if test_sets:
        extra_metrics, extra_probs = score_extra_tests(classifiers, test_sets, tta,
                                                       crop_sizes if tta == "tencrop" else None,
                                                       int(cfg.get("batch_size", 512)), sources)
        for member, extra_member in zip(metrics["per_model"], extra_metrics.pop("per_model")):
            member.update({k: v for k, v in extra_member.items() if k != "ckpt_path"})
        metrics.update(extra_metrics)
        probs.update(extra_probs)
        data.update({extra_test_key(faces.name): (faces.images, faces.labels) for faces in test_sets})
    metrics.update({
        "tta": tta,
        "tta_crop_sizes": crop_sizes if tta == "tencrop" else None,
        "ckpt_paths": sources,
        "num_models": len(paths),
        "num_faces": {split: int(len(labels)) for split, (_, labels) in data.items()},  # extra sets added below
        "data": str(cfg.data.root) if "root" in cfg.data else datamodule.name,
        "val_split": val_source,
        "class_names": list(class_names),
        "device": device,
        "output_dir": str(output_dir.resolve()),
    })
    for faces in test_sets:
        metrics["num_faces"][extra_test_key(faces.name)] = int(len(faces.labels))
    if len(paths) == 1:
        del metrics["per_model"]  # the model's numbers are the top-level ones
    for prefix in ([""] if tta == "none" else ["", NO_TTA]):
        if f"{prefix}val/acc" in metrics and f"{prefix}test/acc" in metrics:
            metrics[f"{prefix}public_private_gap"] = metrics[f"{prefix}val/acc"] - metrics[f"{prefix}test/acc"]

    for split, (_, labels) in data.items():
        stem = split.replace("/", "_")  # test/ckplus -> probs_test_ckplus.npy
        np.save(output_dir / f"probs_{stem}.npy", probs[split])
        np.save(output_dir / f"labels_{stem}.npy", np.asarray(labels, dtype=np.int64))
    if "test" in data:
        matrix = confusion_matrix(probs["test"], data["test"][1], len(class_names))
        (output_dir / "confusion_matrix.json").write_text(json.dumps(matrix.tolist()) + "\n")
        models = "\n".join(model_label(path) for path in paths) if len(paths) <= 3 else f"{len(paths)} models"
        kind = f"ensemble of {len(paths)} models" if len(paths) > 1 else "1 model"
        title = (f"{_split_name('test', official)}, {kind}, TTA {tta}: accuracy {metrics['test/acc']:.4f}"
                 + ("" if len(paths) > 3 else f"\n{models}"))
        save_confusion_matrix(matrix, class_names, title, output_dir / "confusion_matrix.png")
    if test_sets:
        kind = f"ensemble of {len(paths)} models" if len(paths) > 1 else "1 model"
        save_extra_test_figures(metrics, probs, test_sets, list(class_names), output_dir, f"{kind}, TTA {tta}")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    shown = [*splits, *(extra_test_key(faces.name) for faces in test_sets)]
    print(results_table(metrics, shown, tta, official), flush=True)
    log.info("Results: %s (metrics.json, probs_*.npy in %s)",
             ", ".join(f"{s}/acc={metrics[f'{s}/acc']:.4f}" for s in shown), output_dir)
    return metrics
