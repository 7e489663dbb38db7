"""The finder's frames/s on one video with YuNet in each runtime (onnxruntime, OpenCV's DNN module), A/B.

    python experiments/inference/yunet_runtimes.py VIDEO --yunet-model ../shared/models/face_detection_yunet.onnx \
        [--runs 3] [--out results.json]

Each run is the whole finder (`fer_lightning.inference.pipeline.run`: decode, detect, align, classify, write the
records and, when annotated, the video) with the shipped model; frames/s from its summary, median of the runs.
Run it on an idle machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from fer_lightning.inference.detectors import YUNET_RUNTIMES
from fer_lightning.inference.pipeline import PredictConfig, run
from fer_lightning.inference.recognizer import EmotionRecognizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--yunet-model", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for runtime in YUNET_RUNTIMES:
            for annotate in (True, False):
                fps = []
                for i in range(args.runs):
                    recognizer = EmotionRecognizer.from_checkpoint(
                        None, detector="yunet", threads=1,
                        detector_options={"model_path": args.yunet_model, "runtime": runtime})
                    summary = run(PredictConfig(input=args.video, output=f"{scratch}/{runtime}_{annotate}_{i}",
                                                annotate=annotate, progress=False), recognizer=recognizer)
                    fps.append(summary["fps"])
                key = f"{runtime}/{'annotated' if annotate else 'records_only'}"
                results[key] = {"median_fps": statistics.median(fps), "runs_fps": fps}
                print(key, results[key], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
