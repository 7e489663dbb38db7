"""`python -m fer_lightning.export ckpt_path=PATH [format=onnx] [quantize=int8] ...`: deployable model files.

Arguments are `key=value` pairs, like the training command's overrides, but parsed without Hydra: an export
needs no config tree, no run directory and no logging setup, and should fail fast on a mistyped key.
By default the exported file is checked against the checkpoint on a few synthetic faces, so a broken export
is caught here rather than by the application that loads it.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
QUANTIZATIONS = ("int8",)
PARITY_TOLERANCE = 1e-4  # float32 exports agree to ~1e-7 in probability; more means a broken export
PARITY_FACES = 16

USAGE = """\
usage: python -m fer_lightning.export ckpt_path=PATH [key=value ...]

Export a training checkpoint (.ckpt) for deployment. An ONNX file runs with onnxruntime alone (no torch):
    fer_lightning.inference.onnx_runtime.OnnxEmotionClassifier(path)

keys:
  ckpt_path=PATH      the checkpoint to export (required)
  format=onnx         onnx | torchscript
  output=PATH         file to write (default: next to the checkpoint, .onnx or .pt)
  opset=18            ONNX opset (18 or newer)
  quantize=null       int8: also write a dynamically quantised <output stem>.int8.onnx (onnx only)
  check=true          compare the exported model with the checkpoint on synthetic faces

example:
  python -m fer_lightning.export ckpt_path=outputs/train/runs/RUN/checkpoints/epoch018_val-acc0.6500.ckpt quantize=int8
"""


@dataclass
class ExportConfig:
    ckpt_path: str | None = None
    format: str = "onnx"
    output: str | None = None
    opset: int = 18
    quantize: str | None = None
    check: bool = True


class ExportMismatchError(RuntimeError):
    """The exported file computes something else than the checkpoint."""


class UsageError(ValueError):
    """A command line that cannot mean anything: reported with the usage text, exit status 2."""


def parse_args(argv: list[str]) -> ExportConfig:
    known = [f.name for f in fields(ExportConfig)]
    for arg in argv:
        if "=" not in arg:
            raise UsageError(f"expected key=value, got '{arg}'")
        key = arg.split("=", 1)[0].lstrip("+")
        if key.split(".")[0] not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise UsageError(f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExportConfig),
                                 OmegaConf.from_dotlist([arg.lstrip("+") for arg in argv]))
    except OmegaConfBaseException as err:
        raise UsageError(str(err).splitlines()[0]) from err
    cfg: ExportConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    if not cfg.ckpt_path:
        raise UsageError("ckpt_path is required: python -m fer_lightning.export ckpt_path=PATH/TO/model.ckpt")
    if cfg.format not in FORMATS:
        raise UsageError(f"format must be one of {sorted(FORMATS)}, got '{cfg.format}'")
    if cfg.quantize is not None and cfg.quantize not in QUANTIZATIONS:
        raise UsageError(f"quantize must be one of {list(QUANTIZATIONS)} or null, got '{cfg.quantize}'")
    if cfg.quantize is not None and cfg.format != "onnx":
        raise UsageError(f"quantize={cfg.quantize} applies to format=onnx only")
    return cfg


def output_paths(cfg: ExportConfig) -> tuple[Path, Path | None]:
    """Where the export and (when asked for) its int8 version go."""
    assert cfg.ckpt_path is not None  # parse_args guarantees it
    output = Path(cfg.output) if cfg.output else Path(cfg.ckpt_path).with_suffix(FORMATS[cfg.format])
    quantized = output.with_name(f"{output.stem}.int8.onnx") if cfg.quantize == "int8" else None
    return output, quantized


def export(cfg: ExportConfig) -> list[Path]:
    """Write the files ``cfg`` asks for, print where, and check them against the checkpoint."""
    # Imported here: torch and the exporter take seconds to load, which `--help` and usage errors should not.
    from fer_lightning.checkpoints import read_checkpoint_meta
    from fer_lightning.inference import export as exporter

    assert cfg.ckpt_path is not None
    ckpt_path = Path(cfg.ckpt_path)
    read_checkpoint_meta(ckpt_path)  # a missing file, a directory, an .onnx or no checkpoint at all: said here
    output, quantized = output_paths(cfg)
    if cfg.format == "onnx":
        written = [exporter.export_onnx(ckpt_path, output, opset=cfg.opset)]
        if quantized is not None:
            written.append(exporter.quantize_int8(output, quantized))
    else:
        written = [exporter.export_torchscript(ckpt_path, output)]
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if cfg.check:
        _check(ckpt_path, written)
    return written


def _check(ckpt_path: Path, written: list[Path]) -> None:
    """Print how far each written file is from the checkpoint; a float32 file past tolerance is an error."""
    import torch

    from fer_lightning.inference import export as exporter
    from fer_lightning.inference.classifier import TorchEmotionClassifier, softmax
    from fer_lightning.inference.onnx_runtime import OnnxEmotionClassifier

    reference = TorchEmotionClassifier.from_checkpoint(ckpt_path)
    faces = exporter.parity_faces(reference.eval_transform, count=PARITY_FACES)
    expected = reference.predict_proba(faces)
    for path in written:
        if path.suffix == ".onnx":
            classifier = OnnxEmotionClassifier(path)
            probs, quantized = classifier.predict_proba(faces), "quantization" in classifier.metadata
        else:
            module, _ = exporter.load_torchscript(path)
            with torch.no_grad():
                probs, quantized = softmax(module(torch.from_numpy(faces)).numpy()), False
        diff = float(np.abs(probs - expected).max())
        agree = int((probs.argmax(1) == expected.argmax(1)).sum())
        print(f"check {path.name}: max |p_checkpoint - p_exported| = {diff:.2e} over {len(faces)} synthetic faces, "
              f"same top class on {agree}/{len(faces)}")
        if not quantized and diff > PARITY_TOLERANCE:
            raise ExportMismatchError(f"{path} disagrees with {ckpt_path} (max probability difference {diff:.2e} > "
                               f"{PARITY_TOLERANCE:.0e}): the export is broken; please report it")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(USAGE)
        return 0
    try:
        cfg = parse_args(argv)
    except UsageError as err:
        print(f"error: {err}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        export(cfg)
    except (FileNotFoundError, ValueError, ExportMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
