"""Score the emotion finder's own output on labelled image folders: what a user gets, not what training logged.

    python -m fer_lightning.predict input=DIR detector=none annotate=false output=OUT [ckpt_path=MODEL]
    python experiments/cross_dataset/score_predictions.py OUT/predictions.jsonl --root DIR \
        [--label-map anger=angry sadness=sad contempt=null] [--by-prefix PublicTest_ PrivateTest_] [--out X.json]

Each record's class is its image's folder (`<root>/.../<class>/<image>`), renamed by `--label-map` (the same
mapping `extra_test=ckplus` uses, through `fer_lightning.data.folder_faces.resolve_label_map`); `--by-prefix`
scores file-name groups separately (the Kaggle FER2013 `test/` folder holds PublicTest_* and PrivateTest_*). Metrics
come from `fer_lightning.metrics.present_class_metrics`, so they read like every other number of the project. An
image without a prediction (`label: null`) counts as wrong and is reported; a label map target that is null drops
that folder, counted.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from fer_lightning.data.folder_faces import resolve_label_map
from fer_lightning.labels import EMOTION_TO_ID, EMOTIONS
from fer_lightning.metrics import NO_PREDICTION, present_class_metrics_of_predictions


def score(predictions: Path, root: Path, label_map: dict[str, str | None], prefixes: list[str]) -> dict:
    mapping = resolve_label_map(label_map)
    groups: dict[str, tuple[list[int], list[int]]] = {}
    dropped: Counter[str] = Counter()
    unlabelled: Counter[str] = Counter()
    for line in predictions.read_text().splitlines():
        record = json.loads(line)
        path = Path(record["source"]).resolve()
        rel = path.relative_to(root.resolve())
        folder = rel.parent.name.lower()
        target = mapping.get(folder, folder if folder in EMOTION_TO_ID else "?")
        if target == "?":
            raise SystemExit(f"{rel}: folder {folder!r} is neither a FER2013 class nor in --label-map")
        if target is None:
            dropped[folder] += 1
            continue
        group = next((p.rstrip("_") for p in prefixes if path.name.startswith(p)), "all")
        probs = record.get("probs")
        if probs is None:  # no face found: a wrong answer the user would see
            unlabelled[group] += 1
            predicted = NO_PREDICTION
        else:
            predicted = int(np.argmax([probs[name] for name in EMOTIONS]))
        answers, labels = groups.setdefault(group, ([], []))
        answers.append(predicted)
        labels.append(EMOTION_TO_ID[target])
    results = {}
    for group, (answers, labels) in sorted(groups.items()):
        metrics = present_class_metrics_of_predictions(np.asarray(answers), np.asarray(labels), EMOTIONS, group)
        results[group] = {"faces": len(labels), "no_prediction": unlabelled[group], **metrics}
    return {"predictions": str(predictions), "root": str(root), "dropped": dict(dropped), "groups": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--root", type=Path, required=True, help="the folder predict was run on")
    parser.add_argument("--label-map", nargs="*", default=[], help="folder=class or folder=null")
    parser.add_argument("--by-prefix", nargs="*", default=[], help="score file-name prefix groups apart")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    label_map = dict(item.split("=", 1) for item in args.label_map)
    result = score(args.predictions, args.root, label_map, args.by_prefix)
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for group, metrics in result["groups"].items():
        per_class = ", ".join(f"{k.rsplit('acc_', 1)[1]} {v:.2f}" for k, v in metrics.items() if "/acc_" in k)
        print(f"{group}: {metrics['faces']} faces, acc {metrics[f'{group}/acc']:.4f}, "
              f"macro-F1 {metrics[f'{group}/f1_macro']:.4f} ({per_class})")


if __name__ == "__main__":
    main()
