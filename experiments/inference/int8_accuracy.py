"""Accuracy change from int8 dynamic quantisation of the shipped model, on FER2013 PublicTest and PrivateTest.

    python -m fer_lightning.export ckpt_path=fer_lightning/assets/fer2013_compact_cnn.ckpt \
        output=/tmp/shipped.onnx quantize=int8
    python experiments/inference/int8_accuracy.py --data ../shared/data/fer2013.zip --int8 /tmp/shipped.int8.onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ship_model import split_metrics

from fer_lightning.assets import shipped_model_file
from fer_lightning.data.datamodule import load_fer2013
from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.labels import TEST, VAL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--int8", required=True, type=Path)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    arrays = load_fer2013(args.data)
    results = {}
    for kind, path in (("float32", shipped_model_file("onnx")), ("int8", args.int8)):
        recognizer = EmotionRecognizer.from_checkpoint(path, detector="none")
        results[kind] = {"bytes": path.stat().st_size, **{
            split: split_metrics(recognizer, arrays.images[arrays.splits == code], arrays.labels[arrays.splits == code])
            for split, code in (("PublicTest", VAL), ("PrivateTest", TEST))}}
    for split in ("PublicTest", "PrivateTest"):
        change = results["int8"][split]["acc"] - results["float32"][split]["acc"]
        print(f"{split}: float32 {results['float32'][split]['acc']:.2%}, int8 {results['int8'][split]['acc']:.2%} "
              f"({change * 100:+.2f} points)")
    print(f"size: {results['float32']['bytes']:,} -> {results['int8']['bytes']:,} bytes")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
