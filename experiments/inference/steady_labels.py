"""Label flicker against delay, for each smoothing time constant, on real footage: how the default was chosen.

    python -m fer_lightning.predict input=../shared/media/woman2.mp4 smooth_s=0 output=/tmp/steady
    python experiments/inference/steady_labels.py /tmp/steady/predictions.jsonl \
        --out experiments/inference/results/steady_labels.json --figure experiments/inference/steady_labels.png

The finder's records keep each frame's raw probabilities, so one run gives every time constant: each track's raw
probabilities go through the finder's own `ProbabilitySmoother` (fer_lightning/inference/tracking.py) at each tau.

- Label changes per second: how often a track's shown label changes, over the seconds the tracks were in view.
- Delay of a real change: the raw labels put through a majority filter (+-`--hold-s`/2) give the expression a
  viewer would name; each run of it lasting `--hold-s` or more, after a run of another label, is a real change of
  expression. The delay is the number of frames from its first frame until the smoothed label shows it; a change
  the smoothed label never shows during that run is counted as missed.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from fer_lightning.inference.tracking import ProbabilitySmoother

TAUS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


def read_tracks(path: Path) -> tuple[dict[int, dict], list[str]]:
    """track id -> {"time": (N,), "probs": (N, C)} from a predictions.jsonl of a video run."""
    tracks: dict[int, dict] = defaultdict(lambda: {"time": [], "probs": []})
    names: list[str] = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("label") is None:
            continue
        if record.get("track_id") is None or record.get("time_s") is None:
            raise SystemExit(f"{path}: records without track_id/time_s; run the finder on a video")
        names = list(record["probs"])
        tracks[record["track_id"]]["time"].append(record["time_s"])
        tracks[record["track_id"]]["probs"].append([record["probs"][n] for n in names])
    return {tid: {"time": np.array(t["time"]), "probs": np.array(t["probs"])} for tid, t in tracks.items()}, names


def smoothed_labels(track: dict, tau: float) -> np.ndarray:
    smoother = ProbabilitySmoother(tau)
    return np.array([int(np.argmax(smoother.update(0, p, t))) for t, p in zip(track["time"], track["probs"])])


def sustained_changes(raw: np.ndarray, time: np.ndarray, hold_s: float) -> list[tuple[int, int, int]]:
    """(first frame, new label, last frame) of each real change of expression in a track's raw labels.

    The raw labels are first put through a majority filter (the most common label within +-hold_s/2 of each
    frame), which keeps what a viewer would call the expression and drops one-frame noise; each run of the filtered
    label that lasts at least `hold_s`, and follows a run of another label, is a real change starting at its first
    frame.
    """
    majority = np.empty_like(raw)
    for i, t in enumerate(time):
        lo, hi = np.searchsorted(time, t - hold_s / 2), np.searchsorted(time, t + hold_s / 2, side="right")
        majority[i] = Counter(raw[lo:hi].tolist()).most_common(1)[0][0]
    runs, start = [], 0
    for i in range(1, len(majority) + 1):
        if i == len(majority) or majority[i] != majority[start]:
            runs.append((start, i - 1))
            start = i
    long_runs = [(a, b) for a, b in runs if time[b] - time[a] >= hold_s]
    return [(a, int(majority[a]), b) for (pa, _), (a, b) in zip(long_runs, long_runs[1:])
            if majority[a] != majority[pa]]


def measure(tracks: dict[int, dict], taus: tuple[float, ...], hold_s: float) -> list[dict]:
    seconds = sum(float(t["time"][-1] - t["time"][0]) for t in tracks.values())
    frames = sum(len(t["time"]) for t in tracks.values())
    rows = []
    for tau in taus:
        changes, delays, missed, events = 0, [], 0, 0
        for track in tracks.values():
            raw = track["probs"].argmax(axis=1)
            shown = smoothed_labels(track, tau)
            changes += int(np.count_nonzero(shown[1:] != shown[:-1]))
            for start, label, last in sustained_changes(raw, track["time"], hold_s):
                events += 1
                hits = np.flatnonzero(shown[start:last + 1] == label)
                if len(hits):
                    delays.append(int(hits[0]))
                else:
                    missed += 1
        rows.append({"smooth_s": tau, "label_changes_per_s": round(changes / seconds, 3), "changes": changes,
                     "sustained_changes": events, "shown": len(delays), "missed": missed,
                     "delay_frames_median": float(np.median(delays)) if delays else None,
                     "delay_frames_p90": float(np.percentile(delays, 90)) if delays else None,
                     "delay_frames_max": int(max(delays)) if delays else None})
    for row in rows:
        row["seconds_in_view"] = round(seconds, 3)
        row["frames"] = frames
    return rows


def figure(tracks: dict[int, dict], names: list[str], rows: list[dict], chosen: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    track = max(tracks.values(), key=lambda t: len(t["time"]))
    fig, (top, left) = plt.subplots(2, 1, figsize=(11, 6.5), gridspec_kw={"height_ratios": [1.2, 1]})
    raw = track["probs"].argmax(axis=1)
    top.plot(track["time"], raw, drawstyle="steps-post", lw=0.8, color="0.6", label="raw (each frame alone)")
    top.plot(track["time"], smoothed_labels(track, chosen), drawstyle="steps-post", lw=2.0, color="C0",
             label=f"smoothed, time constant {chosen:g} s")
    top.set_yticks(range(len(names)), names)
    top.set_xlabel("time (s)")
    top.set_title("Shown label of the longest track", loc="left")
    top.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    taus = [r["smooth_s"] for r in rows]
    left.plot(taus, [r["label_changes_per_s"] for r in rows], "o-", color="C3", label="label changes per second")
    left.set_xlabel("smoothing time constant (s)")
    left.set_ylabel("label changes / s", color="C3")
    right = left.twinx()
    right.plot(taus, [r["delay_frames_median"] or 0 for r in rows], "s--", color="C2",
               label="median frames until a sustained change shows")
    right.set_ylabel("frames until shown (median)", color="C2")
    for r in rows:
        if r["missed"]:
            right.annotate(f"{r['missed']} missed", (r["smooth_s"], r["delay_frames_median"] or 0),
                           textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7, color="C2")
    left.axvline(chosen, color="0.5", lw=0.8, ls=":")
    left.set_title("Flicker against delay")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help="predictions.jsonl of a video run (smooth_s=0 or any)")
    parser.add_argument("--hold-s", type=float, nargs="+", default=[0.5, 1.0],
                        help="how long a real change must hold (seconds); one table per value")
    parser.add_argument("--chosen", type=float, default=None, help="the time constant drawn in the figure")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    tracks, names = read_tracks(args.predictions)
    tables = {}
    for hold_s in args.hold_s:
        rows = tables[hold_s] = measure(tracks, TAUS, hold_s)
        print(f"{len(tracks)} track(s), {rows[0]['frames']} faces over {rows[0]['seconds_in_view']} s in view; a "
              f"real change holds >= {hold_s:g} s")
        print("| smooth_s | label changes / s | real changes shown | median delay (frames) | p90 | max |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['smooth_s']:g} | {r['label_changes_per_s']:.2f} | {r['shown']} of {r['sustained_changes']} "
                  f"| {r['delay_frames_median']} | {r['delay_frames_p90']:.1f} | {r['delay_frames_max']} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"predictions": str(args.predictions), "tracks": len(tracks),
                                        "tables": {f"hold_{h:g}s": rows for h, rows in tables.items()}},
                                       indent=2) + "\n")
    rows = tables[args.hold_s[0]]
    if args.figure:
        from fer_lightning.inference.tracking import DEFAULT_SMOOTH_S

        figure(tracks, names, rows, args.chosen if args.chosen is not None else DEFAULT_SMOOTH_S, args.figure)


if __name__ == "__main__":
    main()
