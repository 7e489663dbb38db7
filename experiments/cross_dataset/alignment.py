"""Does levelling the eyes (YuNet's landmarks) before classification help the emotion finder?

    python experiments/cross_dataset/alignment.py --fer ../shared/data/fer2013.zip \
        --ckplus ../shared/data/ckplus48_dev.zip --yunet-model ../shared/models/face_detection_yunet.onnx \
        [--ckpt MODEL] [--rolls 0 20] [--out experiments/cross_dataset/results/alignment.json]

Each face (FER2013 PublicTest, where choices are made, and CK+ dev) is upscaled 4x into a larger picture with its
border extended, as `experiments/inference/framing.py` does, optionally rolled by a random angle in +-ROLL degrees
(a tilted head or phone), run through YuNet, and classified from the detected box with and without alignment. The
accuracies count the faces found in both settings alike (the same detections), so the difference is alignment's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.data.datamodule import load_fer2013
from fer_lightning.data.folder_faces import read_labelled_folder
from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.labels import VAL
from fer_lightning.preprocessing import face_to_fer

UPSCALE = 4
BORDER = 64
CK_MAP = {"anger": "angry", "sadness": "sad", "contempt": None}


def picture_of(face: np.ndarray, roll: float) -> np.ndarray:
    big = cv2.resize(face, (48 * UPSCALE, 48 * UPSCALE), interpolation=cv2.INTER_CUBIC)
    picture = cv2.copyMakeBorder(big, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_REPLICATE)
    if roll:
        centre = (picture.shape[1] / 2, picture.shape[0] / 2)
        matrix = cv2.getRotationMatrix2D(centre, roll, 1.0)
        picture = cv2.warpAffine(picture, matrix, picture.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)


def measure(recognizer: EmotionRecognizer, images: np.ndarray, labels: np.ndarray, max_roll: float,
            seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    plain, aligned, kept = [], [], []
    for i, face in enumerate(images):
        roll = float(rng.uniform(-max_roll, max_roll)) if max_roll else 0.0
        picture = picture_of(face, roll)
        found = recognizer.detect(picture)
        if not found or found[0].eyes is None:
            continue
        kept.append(i)
        plain.append(face_to_fer(picture, found[0].box))
        aligned.append(face_to_fer(picture, found[0].box, eyes=found[0].eyes))
    truth = labels[kept]
    acc_plain = float((recognizer.predict_faces(plain).argmax(1) == truth).mean())
    acc_aligned = float((recognizer.predict_faces(aligned).argmax(1) == truth).mean())
    return {"faces": int(len(images)), "detected": len(kept), "max_roll_deg": max_roll,
            "acc_unaligned": acc_plain, "acc_aligned": acc_aligned, "gain": acc_aligned - acc_plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fer", required=True)
    parser.add_argument("--ckplus", required=True)
    parser.add_argument("--yunet-model", default=None)
    parser.add_argument("--ckpt", default=None, help="model (.ckpt or .onnx); default: the shipped model")
    parser.add_argument("--rolls", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    options = {"model_path": args.yunet_model} if args.yunet_model else None
    recognizer = EmotionRecognizer.from_checkpoint(args.ckpt, detector="yunet", detector_options=options)
    arrays = load_fer2013(args.fer)
    sets = {"PublicTest": (arrays.images[arrays.splits == VAL], arrays.labels[arrays.splits == VAL])}
    ck = read_labelled_folder(args.ckplus, CK_MAP, name="ckplus")
    sets["ckplus_dev"] = (ck.images, ck.labels)
    results = []
    started = time.perf_counter()
    for name, (images, labels) in sets.items():
        for roll in args.rolls:
            row = {"set": name, **measure(recognizer, images, labels, roll)}
            results.append(row)
            print(f"{name} roll +-{roll:g} deg: {row['detected']}/{row['faces']} detected, unaligned "
                  f"{row['acc_unaligned']:.4f}, aligned {row['acc_aligned']:.4f} ({100 * row['gain']:+.2f} points)")
    out = {"model": args.ckpt or "shipped (onnx)", "wall_s": round(time.perf_counter() - started, 1),
           "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
