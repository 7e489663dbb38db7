"""Which crop margin makes a detected face look like a FER2013 face to the classifier?

FER2013 faces are already cropped, so the classifier's accuracy on them (classified whole) is the reference.
Each PrivateTest face is upscaled 4x, its border extended (so the detector sees a face in a larger picture), run
through the detector, and re-cropped by the recogniser with several margins. The margin whose accuracy comes
closest to the reference is the framing the model was trained on; ``EmotionRecognizer``'s default follows it.

    python experiments/inference/framing.py --data ../shared/data/fer2013.zip --detector yunet \
        --yunet-model ../shared/models/face_detection_yunet.onnx [--ckpt PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.data.datamodule import load_fer2013
from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.labels import EMOTIONS, TEST
from fer_lightning.preprocessing import face_to_fer

MARGINS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
UPSCALE = 4
BORDER = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--ckpt", default=None, help="model (.ckpt or .onnx); default: the shipped model")
    parser.add_argument("--detector", default="yunet", choices=["yunet", "haar"])
    parser.add_argument("--yunet-model", default=None)
    parser.add_argument("--limit", type=int, default=None, help="a seeded random sample of N PrivateTest faces")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    arrays = load_fer2013(args.data)
    mask = arrays.splits == TEST
    images, labels = arrays.images[mask], arrays.labels[mask]
    if args.limit is not None:  # a seeded random sample: the archive is ordered by class
        keep = np.sort(np.random.default_rng(0).choice(len(images), size=args.limit, replace=False))
        images, labels = images[keep], labels[keep]
    options = {"model_path": args.yunet_model} if args.detector == "yunet" and args.yunet_model else None
    recognizer = EmotionRecognizer.from_checkpoint(args.ckpt, detector=args.detector, detector_options=options)

    started = time.perf_counter()
    reference = recognizer.predict_faces(list(images)).argmax(1)
    detected_idx, boxes = [], []
    for i, face in enumerate(images):
        big = cv2.resize(face, (48 * UPSCALE, 48 * UPSCALE), interpolation=cv2.INTER_CUBIC)
        picture = cv2.copyMakeBorder(big, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_REPLICATE)
        found = recognizer.detect(cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR))
        if found:
            detected_idx.append(i)
            boxes.append((picture, found[0].box))
    detected = np.array(detected_idx, dtype=int)
    results = {
        "faces": len(images), "detected": len(detected), "detector": recognizer.detector.name,
        "model": str(args.ckpt or "shipped"),
        "reference_acc_all": float((reference == labels).mean()),
        "reference_acc_detected": float((reference[detected] == labels[detected]).mean()),
        "by_margin": {},
    }
    for margin in MARGINS:
        faces = [face_to_fer(picture, box, margin) for picture, box in boxes]
        predicted = recognizer.predict_faces(faces).argmax(1)
        agree = float((predicted == reference[detected]).mean())
        results["by_margin"][str(margin)] = {"acc": float((predicted == labels[detected]).mean()),
                                             "agreement_with_reference": agree}
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
    print(f"classes: {', '.join(EMOTIONS)}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
