"""Turning a training checkpoint into a deployable file: ONNX (optionally int8) or TorchScript.

A Lightning checkpoint needs torch, Lightning, timm and this package's training code to be read. An exported
file needs only a runtime: :class:`~fer_lightning.inference.onnx_runtime.OnnxEmotionClassifier` runs the ONNX
file with onnxruntime and no torch at all. Each exported file carries the class names and the exact evaluation
preprocessing (the albumentations pipeline stored in the checkpoint), so it is self-describing.

Exporter: the torch.export-based ONNX exporter (``dynamo=True``, torch's default since 2.9). The legacy
TorchScript-based one is deprecated and fails on timm networks whose adaptive pooling does not divide the input
(VGG at 48 px); the dynamo one exported every backbone tried (compact and scratch CNN, resnet18, efficientnet_b0,
inception_v3, vgg11_bn) with outputs matching PyTorch. It implements opset 18 and
newer only: asked for 17 it falls back to a version converter that fails on the compact CNN's ReduceMean, so
``opset`` below 18 is refused rather than silently written as 18.

Int8: ``onnxruntime.quantization.quantize_dynamic`` with **uint8** weights. Both int8 and uint8 weights give a
model that onnxruntime's CPU provider runs (ConvInteger + MatMulInteger), but with int8 weights ConvInteger takes
a slow path: about 5x slower than float32 on the compact CNN, while uint8 weights run at float32 speed, with
the same 3.7x smaller file and similar accuracy. Static quantization (QDQ) was about 3x faster again but
needs calibration faces that match the deployment data, which an export command does not have.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import fer_lightning
from fer_lightning.errors import FERLightningError, UsageError
from fer_lightning.inference.base import softmax
from fer_lightning.inference.classifier import TorchEmotionClassifier
from fer_lightning.inference.onnx_runtime import (
    METADATA_FORMAT_VERSION,
    METADATA_KEY,
    OnnxEmotionClassifier,
    parse_metadata,
)
from fer_lightning.preprocessing import Transform, prepare_face

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> suffix of the written file
QUANTIZATIONS = ("int8",)
PARITY_TOLERANCE = 1e-4  # float32 exports agree to ~1e-7 in probability; more means a broken export
PARITY_FACES = 16
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TORCHSCRIPT_METADATA_FILE = "fer_lightning.json"  # the torch.jit _extra_files entry holding the metadata
MIN_OPSET = 18  # the lowest opset the torch.export-based exporter implements


class ExportMismatchError(FERLightningError, RuntimeError):
    """The exported file computes something else than the checkpoint."""


class ExportedNetwork(nn.Module):
    """What gets exported: ``FERClassifier.forward`` without the LightningModule around the network.

    Tracing a LightningModule drags in its metrics and trips over its ``trainer`` property; the network and the
    gray-input handling are all inference needs. The parity check guards against this drifting from
    ``FERClassifier.forward``.
    """

    def __init__(self, net: nn.Module, repeat_gray: bool) -> None:
        super().__init__()
        self.net = net
        self.repeat_gray = repeat_gray

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_gray:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


def _load(ckpt_path: str | Path) -> tuple[TorchEmotionClassifier, ExportedNetwork, dict[str, Any]]:
    """The checkpoint as a classifier, the network to export, and the metadata the exported file carries."""
    import albumentations as A

    ckpt_path = Path(ckpt_path)
    classifier = TorchEmotionClassifier.from_checkpoint(ckpt_path)  # FileNotFoundError names a missing file
    model = classifier.model
    hp = model.hparams
    network = ExportedNetwork(model.net, hp.gray_input == "repeat").eval()
    metadata = {
        "format_version": METADATA_FORMAT_VERSION,
        "class_names": list(classifier.class_names),
        "eval_transform": A.to_dict(classifier.eval_transform),
        "input_size": int(hp.input_size),
        "in_chans": int(hp.in_chans),
        "backbone": str(hp.backbone),
        "source_checkpoint": ckpt_path.name,
        "fer_lightning_version": fer_lightning.__version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return classifier, network, metadata


def _example_input(metadata: dict[str, Any], batch: int) -> torch.Tensor:
    size = metadata["input_size"]
    return torch.zeros(batch, metadata["in_chans"], size, size)


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as err:  # onnx is the `export` extra; running an exported file does not need it
        raise ImportError("exporting to ONNX needs the `onnx` and `onnxscript` packages: "
                          "pip install 'fer_lightning[export]'") from err
    return onnx


def _set_metadata(model: Any, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` as JSON under METADATA_KEY, replacing any earlier value."""
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def _save_checked(model: Any, output_path: Path) -> Path:
    """Validate, then write one self-contained file (weights inline: these models are far below 2 GB)."""
    onnx = _import_onnx()
    onnx.checker.check_model(model, full_check=True)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(output_path), save_as_external_data=False)
    return output_path


def export_onnx(ckpt_path: str | Path, output_path: str | Path, opset: int = MIN_OPSET,
                dynamic_batch: bool = True) -> Path:
    """Write the checkpoint's network as ONNX: input "input" (N, in_chans, size, size) float32, output "logits".

    With ``dynamic_batch`` the batch dimension is symbolic, so one file serves single faces and whole frames;
    without it the batch is fixed at 1 (some accelerators' runtimes want static shapes).
    """
    if opset < MIN_OPSET:
        raise UsageError(f"opset {opset} is not supported: torch's ONNX exporter writes opset {MIN_OPSET} or newer "
                         "(every onnxruntime since 1.14 runs opset 18)")
    onnx = _import_onnx()
    _, network, metadata = _load(ckpt_path)
    batch = 2 if dynamic_batch else 1  # an example batch of 1 would let torch.export specialise the dimension
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's deprecation chatter says nothing about this model
        program = torch.onnx.export(network, (_example_input(metadata, batch),), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
    model = onnx.ModelProto()
    model.CopyFrom(program.model_proto)
    metadata["opset"] = opset
    _set_metadata(model, metadata)
    return _save_checked(model, Path(output_path))


def _drop_preprocess_hint(record: logging.LogRecord) -> bool:
    """onnxruntime logs a "consider pre-processing" hint on every call; ``quant_pre_process`` was tried on these
    networks and gave the same quantised model, so the hint is only noise in the export command's output."""
    return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(onnx_path: str | Path, output_path: str | Path) -> Path:
    """Dynamic int8 quantisation of an exported file (uint8 weights; see the module docstring for why).

    Weights are stored in 8 bits and activations quantised per batch at run time, so no calibration data is
    needed. The fer_lightning metadata is carried over, marked with the quantisation used.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx = _import_onnx()
    onnx_path, output_path = Path(onnx_path), Path(output_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    source = onnx.load(str(onnx_path))
    metadata = parse_metadata({p.key: p.value for p in source.metadata_props}, onnx_path)
    with tempfile.TemporaryDirectory() as tmp:
        quantized_path = Path(tmp) / "quantized.onnx"
        root = logging.getLogger()
        root.addFilter(_drop_preprocess_hint)
        try:
            quantize_dynamic(onnx_path, quantized_path, weight_type=QuantType.QUInt8)
        finally:
            root.removeFilter(_drop_preprocess_hint)
        quantized = onnx.load(str(quantized_path))
    metadata["quantization"] = "int8 dynamic (onnxruntime quantize_dynamic, uint8 weights)"
    metadata["source_onnx"] = onnx_path.name
    _set_metadata(quantized, metadata)
    return _save_checked(quantized, output_path)


def export_torchscript(ckpt_path: str | Path, output_path: str | Path) -> Path:
    """Write the network traced with ``torch.jit.trace``, metadata in the ``fer_lightning.json`` extra file.

    For C++ (libtorch) deployments; Python deployments are better served by ONNX, which needs no torch.
    TorchScript is deprecated in torch, so its warnings are silenced here rather than shown on every export.
    """
    _, network, metadata = _load(ckpt_path)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(network, _example_input(metadata, 2))
        torch.jit.save(traced, str(output_path), _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})
    return output_path


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A TorchScript file written by :func:`export_torchscript` and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript model not found: {path}")
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    raw = extra[TORCHSCRIPT_METADATA_FILE]
    return module.eval(), parse_metadata({METADATA_KEY: raw} if raw else {}, path)


def parity_faces(transform: Transform, count: int = 8, seed: int = 0) -> np.ndarray:
    """``count`` synthetic faces prepared with ``transform``: (count, C, H, W) float32 inputs for parity checks."""
    from fer_lightning.data.synthetic import make_synthetic_faces

    images, _ = make_synthetic_faces(count, seed=seed)
    return np.stack([prepare_face(image, transform) for image in images])


@dataclass(frozen=True)
class Parity:
    """How far an exported file is from its checkpoint on the same prepared faces."""

    path: Path
    max_abs_diff: float  # largest |p_checkpoint - p_exported| over all faces and classes
    same_top_class: int  # faces whose predicted class agrees
    faces: int
    quantized: bool  # an int8 file is expected to differ; only float32 files are held to PARITY_TOLERANCE

    def describe(self) -> str:
        return (f"check {self.path.name}: max |p_checkpoint - p_exported| = {self.max_abs_diff:.2e} over "
                f"{self.faces} synthetic faces, same top class on {self.same_top_class}/{self.faces}")

    @property
    def broken(self) -> bool:
        return not self.quantized and self.max_abs_diff > PARITY_TOLERANCE


def parity(ckpt_path: str | Path, exported_path: str | Path, faces: np.ndarray | None = None) -> Parity:
    """The one parity check: the checkpoint (PyTorch) against its export (ONNX via onnxruntime, or TorchScript).

    ``faces`` default to `PARITY_FACES` synthetic faces prepared with the checkpoint's own eval transform.
    """
    reference = TorchEmotionClassifier.from_checkpoint(ckpt_path)
    if faces is None:
        faces = parity_faces(reference.eval_transform, count=PARITY_FACES)
    expected = reference.predict_proba(faces)
    exported_path = Path(exported_path)
    if exported_path.suffix.lower() == ".onnx":
        classifier = OnnxEmotionClassifier(exported_path)
        probs, quantized = classifier.predict_proba(faces), "quantization" in classifier.metadata
    else:
        module, _ = load_torchscript(exported_path)
        with torch.no_grad():
            probs, quantized = softmax(module(torch.from_numpy(faces)).numpy()), False
    return Parity(exported_path, float(np.abs(probs - expected).max()),
                  int((probs.argmax(1) == expected.argmax(1)).sum()), len(faces), quantized)


def check_parity(ckpt_path: str | Path, exported_path: str | Path, faces: np.ndarray | None = None) -> Parity:
    """`parity`, raising `ExportMismatchError` for a float32 export past `PARITY_TOLERANCE`."""
    result = parity(ckpt_path, exported_path, faces)
    if result.broken:
        raise ExportMismatchError(
            f"{result.path} disagrees with {ckpt_path} (max probability difference {result.max_abs_diff:.2e} > "
            f"{PARITY_TOLERANCE:.0e}): the export is broken; please report it")
    return result


def export_checkpoint(ckpt_path: str | Path, format: str = "onnx", output: str | Path | None = None,
                      opset: int = MIN_OPSET, quantize: str | None = None) -> list[Path]:
    """Every file an export asks for: the ONNX or TorchScript file, and its int8 copy when ``quantize="int8"``.

    ``output`` defaults to the checkpoint's path with the format's suffix; the int8 copy is
    ``<output stem>.int8.onnx``. The checkpoint is read safely first, so a file that is no checkpoint is refused
    with its path before anything is written.
    """
    from fer_lightning.checkpoints import read_checkpoint_meta

    if format not in FORMATS:
        raise UsageError(f"format must be one of {sorted(FORMATS)}, got '{format}'")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"quantize must be one of {list(QUANTIZATIONS)} or null, got '{quantize}'")
    if quantize is not None and format != "onnx":
        raise UsageError(f"quantize={quantize} applies to format=onnx only")
    ckpt_path = Path(ckpt_path)
    read_checkpoint_meta(ckpt_path)  # a missing file, a directory, an .onnx or no checkpoint at all: said here
    output_path = Path(output) if output else ckpt_path.with_suffix(FORMATS[format])
    if format == "torchscript":
        return [export_torchscript(ckpt_path, output_path)]
    written = [export_onnx(ckpt_path, output_path, opset=opset)]
    if quantize == "int8":
        written.append(quantize_int8(output_path, output_path.with_name(f"{output_path.stem}.int8.onnx")))
    return written
