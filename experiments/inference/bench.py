"""Inference speed on this machine: end-to-end frame latency, classifier throughput, video throughput.

    python experiments/inference/bench.py --yunet-model ../shared/models/face_detection_yunet.onnx \
        --out experiments/inference/results/bench.json

Medians over repeated runs after a warm-up. The frame is a 640x480 picture with one face (scikit-image's
astronaut portrait, face about 90x113 px); the video is 300 such frames with the face moving. Run it on an idle
machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_lightning.assets import shipped_model_file
from fer_lightning.inference.classifier import load_classifier
from fer_lightning.inference.pipeline import PredictConfig, run
from fer_lightning.inference.recognizer import EmotionRecognizer


def face_frame() -> np.ndarray:
    from skimage import data

    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 64:576] = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[:480]
    return frame


def make_video(path: Path, frames: int = 300, fps: float = 30.0) -> Path:
    photo = face_frame()[:, 64:576]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        frame = np.full((480, 640, 3), 90, np.uint8)
        x = int(64 + 60 * np.sin(i / 20))
        frame[:, x:x + 512] = photo
        writer.write(frame)
    writer.release()
    return path


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(0.9 * len(times)) - 1], 3),
            "fps_at_median": round(1000 / statistics.median(times), 1), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yunet-model", default=os.environ.get("FER_LIGHTNING_YUNET_MODEL"))
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--video-runs", type=int, default=3)
    parser.add_argument("--int8", default=None, help="an int8 ONNX export of the shipped model, to compare")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    results: dict[str, Any] = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch_threads": torch.get_num_threads(), "opencv": cv2.__version__, "torch": torch.__version__,
    }
    import onnxruntime

    results["onnxruntime"] = onnxruntime.__version__
    frame = face_frame()
    detectors = {"yunet": {"model_path": args.yunet_model}, "haar": {}, "none": {}}
    models = {"onnx": shipped_model_file("onnx"), "torch": shipped_model_file("ckpt")}
    if args.int8:
        models["onnx_int8"] = Path(args.int8)

    # 1. End-to-end latency: one 640x480 frame, one face, detect + crop + classify.
    results["frame_latency"] = {}
    for runtime, path in models.items():
        for name, options in detectors.items():
            recognizer = EmotionRecognizer.from_checkpoint(path, detector=name, detector_options=options or None)
            faces = recognizer.predict(frame)
            assert len(faces) == 1, f"{name} found {len(faces)} faces in the benchmark frame"
            key = f"{runtime}/{name}"
            results["frame_latency"][key] = median_ms(lambda r=recognizer: r.predict(frame), args.repeats)
            results["frame_latency"][key]["label"] = faces[0].label
            print(key, results["frame_latency"][key])
    # the classifier's thread count (default 1) against the runtime's default (all cores)
    results["frame_latency_all_cores"] = {}
    for runtime, path in models.items():
        for name in ("yunet", "haar"):
            recognizer = EmotionRecognizer.from_checkpoint(path, detector=name, threads=None,
                                                           detector_options=detectors[name] or None)
            key = f"{runtime}/{name}"
            results["frame_latency_all_cores"][key] = median_ms(lambda r=recognizer: r.predict(frame), args.repeats)
            print("all cores", key, results["frame_latency_all_cores"][key])
    # detection alone, to split the latency
    results["detect_only"] = {}
    for name in ("yunet", "haar"):
        recognizer = EmotionRecognizer.from_checkpoint(models["onnx"], detector=name,
                                                       detector_options=detectors[name] or None)
        results["detect_only"][name] = median_ms(lambda r=recognizer: r.detect(frame), args.repeats)
        print("detect", name, results["detect_only"][name])

    # 2. Classifier throughput on prepared faces.
    results["classifier_throughput"] = {}
    rng = np.random.default_rng(0)
    for runtime, path in models.items():
        for threads in (None, 1):
            classifier = load_classifier(path, threads=threads)
            for batch in (1, 8, 64):
                faces = rng.normal(size=(batch, 1, 48, 48)).astype(np.float32)
                timing = median_ms(lambda c=classifier, f=faces: c.predict_proba(f), max(20, args.repeats // 4))
                timing["faces_per_s"] = round(batch * 1000 / timing["median_ms"], 1)
                results["classifier_throughput"][f"{runtime}/{threads or 'all'}_threads/batch{batch}"] = timing
                print(runtime, threads, batch, timing)

    # 3. Video throughput: the whole CLI path (decode, detect, classify, write jsonl, annotate + encode).
    results["video"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "bench.mp4")
        for runtime in ("onnx", "torch"):
            for name in ("yunet", "haar"):
                for annotate in (True, False):
                    fps = []
                    for i in range(args.video_runs):
                        recognizer = EmotionRecognizer.from_checkpoint(models[runtime], detector=name,
                                                                       detector_options=detectors[name] or None)
                        cfg = PredictConfig(input=str(video), output=f"{tmp}/out_{runtime}_{name}_{annotate}_{i}",
                                            annotate=annotate, progress=False)
                        summary = run(cfg, recognizer=recognizer)
                        assert summary["frames"] == 300 and summary["frames_without_face"] == 0
                        fps.append(summary["fps"])
                    key = f"{runtime}/{name}/{'annotated' if annotate else 'records_only'}"
                    results["video"][key] = {"median_fps": statistics.median(fps), "runs_fps": fps, "frames": 300}
                    print("video", key, results["video"][key])
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
