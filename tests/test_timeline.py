"""Per-track summaries, timeline plots and the timeline table (fer_lightning/inference/timeline.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_lightning.inference.timeline import (
    TimelineError,
    plot_timelines,
    read_predictions,
    timeline_table,
    track_summaries,
)

NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _probs(label: str, p: float = 0.7) -> dict[str, float]:
    rest = (1 - p) / (len(NAMES) - 1)
    return {name: p if name == label else rest for name in NAMES}


def _record(frame: int, track: int, raw: str, shown: str) -> dict:
    return {"source": "clip.mp4", "frame": frame, "time_s": frame / 10, "box": [10 * track, 20, 50, 50],
            "score": 0.9, "label": raw, "probs": _probs(raw), "track_id": track, "smoothed_label": shown,
            "smoothed_probs": _probs(shown, 0.6)}


@pytest.fixture
def records() -> list[dict]:
    """Track 1 in frames 0-19 (happy 15 frames, then neutral 5; one raw sad blip); track 2 in frames 10-14,
    surprise; frames 20-21 have no face."""
    out = [_record(i, 1, "sad" if i == 3 else ("happy" if i < 15 else "neutral"), "happy" if i < 15 else "neutral")
           for i in range(20)]
    out += [_record(i, 2, "surprise", "surprise") for i in range(10, 15)]
    out.sort(key=lambda r: r["frame"])
    out += [{"source": "clip.mp4", "frame": i, "time_s": i / 10, "label": None} for i in (20, 21)]
    return out


def test_each_track_is_summarised_by_what_the_video_showed(records: list[dict]) -> None:
    one, two = track_summaries(records)
    assert one["track_id"] == 1 and one["frames"] == 20 and one["first_s"] == 0.0 and one["last_s"] == 1.9
    assert one["first_frame"] == 0 and one["last_frame"] == 19
    assert one["dominant"] == "happy" and one["share"] == {"happy": 0.75, "neutral": 0.25}  # not the raw sad blip
    assert sum(one["mean_probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert two == {**two, "track_id": 2, "frames": 5, "first_s": 1.0, "last_s": 1.4, "dominant": "surprise",
                   "share": {"surprise": 1.0}}


def test_the_table_has_a_row_per_tracked_face_with_raw_and_smoothed_columns(records: list[dict],
                                                                             tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    table = timeline_table(path)
    assert len(table) == 25 and sorted(table["track_id"].unique().tolist()) == [1, 2]
    assert {"frame", "time_s", "x", "y", "w", "h", "score", "label", "smoothed_label"} <= set(table.columns)
    assert {f"p_{n}" for n in NAMES} | {f"smoothed_p_{n}" for n in NAMES} <= set(table.columns)
    sad = table[(table.track_id == 1) & (table.frame == 3)].iloc[0]
    assert sad.label == "sad" and sad.smoothed_label == "happy" and sad.p_sad == pytest.approx(0.7)
    assert table.groupby("track_id").size().to_dict() == {1: 20, 2: 5}


def test_the_timeline_has_one_panel_per_track(records: list[dict], tmp_path: Path) -> None:
    one = plot_timelines([r for r in records if r.get("track_id") != 2], tmp_path / "one.png")
    two = plot_timelines(records, tmp_path / "two.png")
    height_one, height_two = cv2.imread(str(one)).shape[0], cv2.imread(str(two)).shape[0]
    assert height_two - height_one == pytest.approx(200, abs=2)  # a 2-inch panel per track at 100 dpi
    image = cv2.imread(str(two))
    assert image.std() > 10  # something is drawn


def test_records_without_tracks_have_no_timeline(tmp_path: Path) -> None:
    photo = [{"source": "a.jpg", "frame": 0, "time_s": None, "box": [0, 0, 9, 9], "score": 1.0, "label": "happy",
              "probs": _probs("happy")}]
    assert track_summaries(photo) == []
    with pytest.raises(TimelineError, match="video or webcam"):
        plot_timelines(photo, tmp_path / "t.png")


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"frame": 0, "label": null}\n{"frame": 1, oops\n')
    with pytest.raises(TimelineError, match=r"predictions.jsonl:2: not a JSON record"):
        read_predictions(path)


def test_a_gap_in_a_track_breaks_its_lines(tmp_path: Path) -> None:
    """A face out of view for a while: no line is drawn across the gap (the probabilities are unknown there)."""
    import matplotlib.pyplot as plt

    rows = [_record(i, 1, "happy", "happy") for i in list(range(10)) + list(range(40, 50))]
    drawn = []
    original = plt.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append(np.asarray(args[0]))
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Axes, "plot", spy)
        plot_timelines(rows, tmp_path / "gap.png")
    assert len(drawn) == 2 * len(NAMES) and all(len(x) == 10 for x in drawn)
