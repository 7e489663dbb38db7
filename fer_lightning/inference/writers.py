"""Machine-readable results: ``predictions.jsonl`` (the contract in DESIGN.md) and an optional flat CSV.

One record per face per frame: ``{"source", "frame", "time_s", "box": [x, y, w, h], "score", "label",
"probs": {class: p}}``; in a video or webcam stream also ``"track_id"``, ``"smoothed_label"`` and
``"smoothed_probs"`` (the raw ``label``/``probs`` stay this frame's own). A frame without a face still gets one
record, with ``"label": null`` and no box, so "no face here" is never confused with "frame not processed".
Records are flushed per frame: a run stopped half-way (Ctrl+C on a webcam) keeps everything up to the last frame.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from fer_lightning.inference.recognizer import FaceRecord
from fer_lightning.inference.video import Frame


def frame_records(frame: Frame, faces: Sequence[FaceRecord]) -> list[dict[str, Any]]:
    head = {"source": frame.source, "frame": frame.index, "time_s": frame.time_s}
    if not faces:
        return [{**head, "label": None}]
    return [{**head, **face.to_dict()} for face in faces]


class PredictionWriter:
    """Writes ``predictions.jsonl`` and, if asked, ``predictions.csv`` (one row per record, a column per class)."""

    def __init__(self, output_dir: Path, class_names: Sequence[str], write_csv: bool = False) -> None:
        self.class_names = tuple(class_names)
        self.jsonl_path = output_dir / "predictions.jsonl"
        self.csv_path = output_dir / "predictions.csv" if write_csv else None
        self._jsonl: TextIO = self.jsonl_path.open("w", encoding="utf-8")
        self._csv_file: TextIO | None = None
        self._csv: Any = None
        if self.csv_path is not None:
            self._csv_file = self.csv_path.open("w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow(["source", "frame", "time_s", "x", "y", "w", "h", "score", "label",
                                *(f"p_{name}" for name in self.class_names), "track_id", "smoothed_label",
                                *(f"smoothed_p_{name}" for name in self.class_names)])
        self.records = 0

    def write(self, frame: Frame, faces: Sequence[FaceRecord]) -> list[dict[str, Any]]:
        """Write the frame's records (flushed at once) and return them."""
        records = frame_records(frame, faces)
        for record in records:
            self._jsonl.write(json.dumps(record) + "\n")
            if self._csv is not None:
                box = record.get("box", ["", "", "", ""])
                probs = record.get("probs") or {}
                smoothed = record.get("smoothed_probs") or {}
                self._csv.writerow([record["source"], record["frame"], _blank(record["time_s"]), *box,
                                    _blank(record.get("score")), _blank(record["label"]),
                                    *(probs.get(name, "") for name in self.class_names),
                                    _blank(record.get("track_id")), _blank(record.get("smoothed_label")),
                                    *(smoothed.get(name, "") for name in self.class_names)])
            self.records += 1
        self._jsonl.flush()
        if self._csv_file is not None:
            self._csv_file.flush()
        return records

    def close(self) -> None:
        self._jsonl.close()
        if self._csv_file is not None:
            self._csv_file.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _blank(value: Any) -> Any:
    return "" if value is None else value
