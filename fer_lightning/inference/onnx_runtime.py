"""An exported emotion classifier run with onnxruntime: no torch, no Lightning, no training code.

This is the deployment path: a machine with numpy, OpenCV, albumentations and onnxruntime can classify faces
from the single ``.onnx`` file that ``python -m fer_lightning.export`` writes. Everything the run-time needs
besides the network (class names, the exact evaluation preprocessing) travels inside that file as JSON in the
ONNX ``metadata_props``, so the file cannot drift apart from a separate config. Nothing here may import torch,
directly or through ``fer_lightning.models`` / ``fer_lightning.data``; a test enforces it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_lightning.inference.base import softmax
from fer_lightning.preprocessing import Transform

METADATA_KEY = "fer_lightning"  # the metadata_props key fer_lightning.inference.export writes
METADATA_FORMAT_VERSION = 1  # bumped when the stored metadata changes incompatibly
REQUIRED_METADATA = ("class_names", "eval_transform", "input_size", "in_chans")


def parse_metadata(custom_metadata: dict[str, str], path: str | Path) -> dict[str, Any]:
    """The fer_lightning metadata of a model, or a ValueError saying why this file cannot be used.

    Takes the plain ``{key: value}`` map so the same check serves onnxruntime's ``custom_metadata_map`` and
    the ``onnx`` package's ``metadata_props`` (tests, export).
    """
    raw = custom_metadata.get(METADATA_KEY)
    if raw is None:
        raise ValueError(
            f"{path} has no '{METADATA_KEY}' metadata: it was not written by `python -m fer_lightning.export` "
            "(or `fer_lightning.inference.export.export_onnx`), so its class names and preprocessing are unknown. "
            "Export the checkpoint with `python -m fer_lightning.export ckpt_path=PATH`"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the '{METADATA_KEY}' metadata is not valid JSON ({err})") from err
    missing = [key for key in REQUIRED_METADATA if key not in meta] if isinstance(meta, dict) else REQUIRED_METADATA
    if missing:
        raise ValueError(f"{path}: the '{METADATA_KEY}' metadata lacks {list(missing)}; re-export the checkpoint")
    version = meta.get("format_version", METADATA_FORMAT_VERSION)
    if version > METADATA_FORMAT_VERSION:
        raise ValueError(f"{path} was exported with metadata format {version}, newer than this fer_lightning "
                         f"understands ({METADATA_FORMAT_VERSION}); upgrade fer_lightning")
    return meta


class OnnxEmotionClassifier:
    """An :class:`~fer_lightning.inference.classifier.EmotionClassifier` backed by an exported ``.onnx`` file.

    ``providers`` defaults to the CPU provider: onnxruntime builds with a GPU refuse to guess when several
    providers are available, and the CPU result is the one the export's parity check compared against.
    ``intra_op_num_threads`` caps onnxruntime's thread pool (by default it takes every core, which fights with
    the face detector and video decoding on the same cores). Spinning is turned off: idle worker threads that
    spin between runs stole the CPU from OpenCV's detector and made a Haar frame 24% slower on 2 cores
    (experiments/inference/README.md).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None,
                 intra_op_num_threads: int | None = None) -> None:
        import albumentations as A
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = int(intra_op_num_threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{self.path} could not be loaded by onnxruntime: {err}") from err
        self.metadata: dict[str, Any] = parse_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.class_names: tuple[str, ...] = tuple(self.metadata["class_names"])
        self.eval_transform: Transform = A.from_dict(self.metadata["eval_transform"])
        self.input_size: int = int(self.metadata["input_size"])
        self.in_chans: int = int(self.metadata["in_chans"])
        model_input = self.session.get_inputs()[0]
        self.input_name: str = model_input.name
        self.output_name: str = self.session.get_outputs()[0].name
        # A model exported with dynamic_batch=False has an int batch dimension; feed it that many faces a run.
        batch = model_input.shape[0] if model_input.shape else None
        self.fixed_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, backbone={self.metadata.get('backbone')!r})"

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        faces = np.ascontiguousarray(faces, dtype=np.float32)
        expected = (self.in_chans, self.input_size, self.input_size)
        if faces.ndim != 4 or faces.shape[1:] != expected:
            raise ValueError(f"expected prepared faces of shape (N, {', '.join(map(str, expected))}), got "
                             f"{faces.shape}; prepare them with fer_lightning.preprocessing.prepare_face and "
                             "this classifier's eval_transform")
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        if self.fixed_batch is None:
            return softmax(self.session.run([self.output_name], {self.input_name: faces})[0].astype(np.float32))
        step, logits = self.fixed_batch, []
        for start in range(0, len(faces), step):
            chunk = faces[start:start + step]
            padded = np.concatenate([chunk, np.zeros((step - len(chunk), *expected), np.float32)])
            logits.append(self.session.run([self.output_name], {self.input_name: padded})[0][:len(chunk)])
        return softmax(np.concatenate(logits).astype(np.float32))
