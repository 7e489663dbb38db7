"""`fer-predict` / `python -m fer_lightning.predict input=PATH [key=value ...]`: the emotion finder's command line.

Input is a photo, a folder of photos, a video file or ``webcam:N``; every key is a field of
`fer_lightning.inference.pipeline.PredictConfig` (``--help`` lists them). Plain key=value over a typed dataclass,
not a Hydra app: inference needs no config groups, sweeps or run folders, and starts in a fraction of the time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fer_lightning.cli.common import key_value_usage, parse_key_values, print_user_error, show_tracebacks, wants_help
from fer_lightning.errors import FERLightningError
from fer_lightning.inference.detectors import YUNET_ENV, YUNET_FILENAME, DetectorUnavailable
from fer_lightning.inference.pipeline import PredictConfig, run

EXIT_BAD_INPUT = 2  # nothing was processed: missing or unreadable input, bad argument
EXIT_SOME_UNREADABLE = 3  # a folder was processed, but some of its files could not be read

USAGE = key_value_usage(__doc__, PredictConfig)


def parse_args(argv: list[str]) -> PredictConfig:
    """key=value arguments onto `PredictConfig`'s typed defaults (`parse_key_values`)."""
    return parse_key_values(PredictConfig, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(USAGE)
        return 0
    try:
        cfg = parse_args(argv)
        summary = run(cfg)
    except DetectorUnavailable as err:
        if show_tracebacks():
            raise
        print(f"error: {err.reason}. Fix: reinstall fer_lightning (it ships the model), yunet_model=/path/to/"
              f"{YUNET_FILENAME} (or set {YUNET_ENV}), or detector=haar, which needs no model file.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FERLightningError, ValueError, FileNotFoundError, TypeError) as err:
        if show_tracebacks():
            raise
        print_user_error(err)
        return EXIT_BAD_INPUT
    print(f"{summary['frames']} frame(s), {summary['faces']} face(s), {summary['frames_without_face']} without a "
          f"face, {summary['fps']} frames/s, detector {summary['detector']}")
    print(f"predictions: {summary['predictions']}")
    for path in summary["annotated"][:3]:
        print(f"annotated: {path}")
    if len(summary["annotated"]) > 3:
        print(f"annotated: ... {len(summary['annotated'])} files in {Path(summary['output']) / 'annotated'}")
    if summary.get("warning"):
        print(f"warning: {summary['warning']}", file=sys.stderr)
    if summary["unreadable"]:
        print(f"{len(summary['unreadable'])} file(s) could not be read (listed in summary.json):", file=sys.stderr)
        for item in summary["unreadable"]:
            print(f"  {item['error']}", file=sys.stderr)
        return EXIT_SOME_UNREADABLE
    return 0


def console_main() -> None:
    """The `fer-predict` console script: `main`'s return value is the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
