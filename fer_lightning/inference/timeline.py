"""How each person felt over a video: per-track summaries, a timeline plot, and the same records as a table.

The finder writes one record per face per frame (`predictions.jsonl`); in a video or webcam stream each carries a
`track_id` and the track's smoothed probabilities (`fer_lightning/inference/tracking.py`). This module reads them
back and answers "how did this person feel over the clip":

- `track_summaries(records)`: for each track, when it was first and last seen, how many frames, its dominant
  emotion and the share of its frames per emotion (by the smoothed label, which is what the video shows; at a
  steady frame rate a share of frames is a share of time). The finder puts these in `summary.json` ("tracks").
- `plot_timelines(records, path)`: one panel per track, the smoothed probabilities over time (`timeline.png`).
- `timeline_table(records)`: a pandas DataFrame, one row per face per frame (pandas is optional: `pip install
  pandas`, or the `app` extra).

`records` is a path to a `predictions.jsonl`, or the record dicts themselves.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_lightning.errors import FERLightningError

if TYPE_CHECKING:
    import pandas

Records = str | Path | Iterable[Mapping[str, Any]]
MAX_PANELS = 8  # the longest tracks get a panel; a crowd's passers-by would make the figure unreadable


class TimelineError(FERLightningError, ValueError):
    """Records that hold no tracked faces (photos, or a video run from before tracks existed)."""


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a finder run's `predictions.jsonl`, in order; a bad line is named with its number."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise TimelineError(f"{path}:{number}: not a JSON record ({err.msg})") from None
    return records


def _records(records: Records) -> list[Mapping[str, Any]]:
    return read_predictions(records) if isinstance(records, (str, Path)) else list(records)


def _tracked(records: Records) -> dict[int, list[Mapping[str, Any]]]:
    """track id -> its face records in time order; records without a face or a track are left out."""
    tracks: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for record in _records(records):
        if record.get("label") is not None and record.get("track_id") is not None:
            tracks[int(record["track_id"])].append(record)
    for rows in tracks.values():
        rows.sort(key=lambda r: (r.get("time_s") or 0.0, r.get("frame", 0)))
    return dict(sorted(tracks.items()))


def _shown(record: Mapping[str, Any]) -> str:
    return record.get("smoothed_label") or record["label"]


def track_summaries(records: Records) -> list[dict[str, Any]]:
    """One summary per track, in track order (see the module docstring)."""
    summaries = []
    for track_id, rows in _tracked(records).items():
        counts = Counter(_shown(r) for r in rows)
        names = list(rows[0].get("smoothed_probs") or rows[0]["probs"])
        mean = np.mean([[(r.get("smoothed_probs") or r["probs"])[n] for n in names] for r in rows], axis=0)
        # ties between equally frequent labels go to the one with the higher mean probability
        dominant = max(counts, key=lambda label: (counts[label], mean[names.index(label)]))
        summaries.append({
            "track_id": track_id, "first_s": rows[0].get("time_s"), "last_s": rows[-1].get("time_s"),
            "first_frame": rows[0].get("frame"), "last_frame": rows[-1].get("frame"), "frames": len(rows),
            "dominant": dominant,
            "share": {name: round(counts[name] / len(rows), 4) for name in names if counts[name]},
            "mean_probs": {name: round(float(p), 4) for name, p in zip(names, mean, strict=True)},
        })
    return summaries


def timeline_table(records: Records) -> pandas.DataFrame:
    """One row per tracked face per frame: `track_id, frame, time_s, x, y, w, h, score, label, smoothed_label`,
    then `p_<class>` and `smoothed_p_<class>` for every class."""
    try:
        import pandas as pd
    except ImportError as err:
        raise ImportError("timeline_table needs pandas: pip install pandas (or fer_lightning[app])") from err
    rows = []
    for track_id, faces in _tracked(records).items():
        for r in faces:
            x, y, w, h = r.get("box") or (None,) * 4
            row = {"track_id": track_id, "frame": r.get("frame"), "time_s": r.get("time_s"), "x": x, "y": y,
                   "w": w, "h": h, "score": r.get("score"), "label": r["label"], "smoothed_label": _shown(r)}
            row.update({f"p_{name}": p for name, p in r["probs"].items()})
            row.update({f"smoothed_p_{name}": p for name, p in (r.get("smoothed_probs") or r["probs"]).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_timelines(records: Records, path: str | Path, colors: Mapping[str, Sequence[float]] | None = None,
                   title: str | None = None) -> Path:
    """`timeline.png`: one panel per track (the `MAX_PANELS` longest), smoothed probabilities over time."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tracks = _tracked(records)
    if not tracks:
        raise TimelineError("no tracked faces to plot: timelines come from a video or webcam run")
    summaries = {s["track_id"]: s for s in track_summaries(r for rows in tracks.values() for r in rows)}
    shown_ids = sorted(sorted(tracks, key=lambda t: -len(tracks[t]))[:MAX_PANELS])
    colors = colors or _emotion_colors()
    fig, axes = plt.subplots(len(shown_ids), 1, figsize=(10, 1.0 + 2.0 * len(shown_ids)), sharex=True,
                             squeeze=False)
    for ax, track_id in zip(axes[:, 0], shown_ids, strict=True):
        rows = tracks[track_id]
        times = np.array([r.get("time_s") if r.get("time_s") is not None else r.get("frame", 0) for r in rows])
        names = list(rows[0].get("smoothed_probs") or rows[0]["probs"])
        probs = np.array([[(r.get("smoothed_probs") or r["probs"])[n] for n in names] for r in rows])
        # a gap (the face out of view) breaks the lines instead of joining across it
        breaks = np.flatnonzero(np.diff(times) > 5 * np.median(np.diff(times))) + 1 if len(times) > 2 else []
        for i, name in enumerate(names):
            segments = zip(np.split(times, breaks), np.split(probs[:, i], breaks), strict=True)
            for j, (segment_t, segment_p) in enumerate(segments):
                ax.plot(segment_t, segment_p, color=colors.get(name, "0.3"), lw=1.6, label=None if j else name)
        s = summaries[track_id]
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        share = s["share"][s["dominant"]]
        ax.set_title(f"track #{track_id}: {_seconds(s['first_s'])}-{_seconds(s['last_s'])}, {s['frames']} frames, "
                     f"mostly {s['dominant']} ({share:.0%} of its frames)", loc="left", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.12), ncol=len(names), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("time (s)")
    hidden = len(tracks) - len(shown_ids)
    heading = title or "Emotions over time (smoothed), one panel per face track"
    if hidden:
        heading += f" ({len(shown_ids)} longest of {len(tracks)} tracks)"
    fig.suptitle(heading, x=0.01, ha="left", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def _emotion_colors() -> dict[str, tuple[float, float, float]]:
    """The annotation's BGR colours as matplotlib RGB, so a timeline reads like the annotated video."""
    from fer_lightning.inference.annotate import EMOTION_COLORS

    colors = {name: (r / 255, g / 255, b / 255) for name, (b, g, r) in EMOTION_COLORS.items()}
    colors["neutral"] = (0.55, 0.55, 0.55)  # the video's light gray would vanish on white
    return colors
