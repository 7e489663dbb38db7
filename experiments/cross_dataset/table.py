"""The robust-training table: one row per run folder, PublicTest (selects), PrivateTest and CK+ dev (reported).

    python experiments/cross_dataset/table.py outputs/cross_dataset [--results experiments/cross_dataset/results]

Reads each `<folder>/<row>/metrics.json` written by `run_ablations.sh` (training with `extra_test=ckplus`), prints
a markdown table with CK+ dev per class and its weakest class, and with `--results` copies every metrics.json (as
`<row>.json`) and CK+ confusion matrix (`<row>_ckplus.png`) there, the files that are committed.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

CK_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def rows(folder: Path) -> list[dict]:
    found = []
    for path in sorted(folder.glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        metrics["row"] = path.parent.name
        found.append(metrics)
    return found


def markdown(runs: list[dict]) -> str:
    header = ["row", "epochs", "PublicTest acc", "PrivateTest acc", "CK+ acc", "CK+ macro-F1", "CK+ weakest",
              *(f"CK+ {c}" for c in CK_CLASSES), "train min"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for m in sorted(runs, key=lambda m: -(m.get("val/acc") or 0)):
        per_class = {c: m.get(f"test/ckplus/acc_{c}") for c in CK_CLASSES}
        known = {c: v for c, v in per_class.items() if v is not None}
        weakest = min(known, key=known.get) if known else None
        cells = [m["row"], str(m.get("epochs")), _pct(m.get("val/acc")), _pct(m.get("test/acc")),
                 _pct(m.get("test/ckplus/acc")), _pct(m.get("test/ckplus/f1_macro")),
                 f"{weakest} {_pct(known[weakest])}" if weakest else "n/a",
                 *(_pct(per_class[c]) for c in CK_CLASSES),
                 f"{(m.get('train_time_s') or 0) / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--results", type=Path, help="copy metrics.json and CK+ confusion matrices here")
    args = parser.parse_args()
    runs = rows(args.folder)
    print(markdown(runs))
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        for m in runs:
            run_dir = args.folder / m["row"]
            shutil.copy(run_dir / "metrics.json", args.results / f"{m['row']}.json")
            if (run_dir / "confusion_matrix_ckplus.png").exists():
                shutil.copy(run_dir / "confusion_matrix_ckplus.png", args.results / f"{m['row']}_ckplus.png")


if __name__ == "__main__":
    main()
