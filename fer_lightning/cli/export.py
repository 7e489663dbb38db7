"""`fer-export` / `python -m fer_lightning.export ckpt_path=PATH [format=onnx] [quantize=int8] ...`: deployable
model files from a training checkpoint, through `fer_lightning.inference.export`.

Arguments are `key=value` pairs, like the training command's overrides, but parsed without Hydra: an export
needs no config tree, no run directory and no logging setup, and should fail fast on a mistyped key.
By default each exported file is checked against the checkpoint on a few synthetic faces, so a broken export
is caught here rather than by the application that loads it.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, fields

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fer_lightning.cli.common import EXIT_USER_ERROR, print_user_error, show_tracebacks
from fer_lightning.errors import FERLightningError, UsageError

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
    return cfg


def export(cfg: ExportConfig) -> None:
    """Write the files ``cfg`` asks for, print where, and check each against the checkpoint."""
    # Imported here: torch and the exporter take seconds to load, which `--help` and usage errors should not.
    from fer_lightning.inference.export import check_parity, export_checkpoint

    assert cfg.ckpt_path is not None  # parse_args guarantees it
    written = export_checkpoint(cfg.ckpt_path, cfg.format, cfg.output, cfg.opset, cfg.quantize)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if cfg.check:
        for path in written:
            print(check_parity(cfg.ckpt_path, path).describe())


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
    except UsageError as err:  # raised by the library too: a format or opset no export can take
        print(f"error: {err}\n\n{USAGE}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, FERLightningError) as err:
        if show_tracebacks():
            raise
        print_user_error(err)
        return EXIT_USER_ERROR
    return 0


def console_main() -> None:
    """The `fer-export` console script: `main`'s return value is the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
