"""Faces across video frames: a track id per face, and each track's emotion probabilities smoothed over time.

Each frame is classified alone, so on real footage the top label flickers (on a 15-second clip of one person
talking and smiling it changed about 5 times a second). Two small pieces fix that without hiding anything:

- `FaceTracker` gives every face box a `track_id` that stays while the face stays in view, and a new id when a
  new face appears. It predicts each track forward at its recent velocity (so two faces that cross keep their ids)
  and keeps an unseen track alive for `max_gap_s` seconds (so a face hidden for a moment, by a hand or another
  person, comes back under its own id). Matching is greedy on a cost of overlap, centre distance and size, which is
  exact for the few faces of a frame. No tracker library is used: those on PyPI either pin numpy < 2 (norfair) or
  require `opencv-python` (supervision, trackers), which would clash with our `opencv-python-headless`.
- `ProbabilitySmoother` averages each track's probabilities exponentially with a time constant in seconds, not
  frames: the weight of the new frame is 1 - exp(-dt / tau), so the result is the same at 30 or 10 frames/s and
  with `every_n_frames`. A track that reappears after a gap starts from its new frame almost alone.

`EmotionTracker` joins them for the finder: it takes a frame's `FaceRecord`s and its time, and returns them with
`track_id` and `smoothed_probs` filled in (the raw `probs`/`label` are kept). Only numpy: the onnxruntime path
uses this module on machines without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fer_lightning.inference.recognizer import FaceRecord

# Chosen by measurement on real footage (experiments/inference/README.md, "Steady labels"): see that section for
# label changes per second and the delay a real change of expression takes to show, at each time constant.
DEFAULT_SMOOTH_S = 0.5
DEFAULT_MAX_GAP_S = 1.0


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # x, y, w, h at `time_s` (float)
    velocity: np.ndarray  # d(x, y, w, h)/dt in pixels per second
    time_s: float
    matches: int = 1

    def predicted(self, time_s: float) -> np.ndarray:
        """Where the box should be at `time_s`, at constant velocity; the size never shrinks below 1 px."""
        box = self.box + self.velocity * (time_s - self.time_s)
        box[2:] = np.maximum(box[2:], 1.0)
        return box


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


class FaceTracker:
    """Track ids for face boxes, frame after frame (see the module docstring).

    - ``max_gap_s``: how long a track survives unseen; a face back within it keeps its id, later it gets a new one.
    - ``max_shift``: how far (in face sizes) a face may be from where its track predicted it and still match.
    - ``max_size_ratio``: how much larger (or smaller) than its track a face may be and still match.
    """

    def __init__(self, max_gap_s: float = DEFAULT_MAX_GAP_S, max_shift: float = 1.0,
                 max_size_ratio: float = 1.6) -> None:
        if max_gap_s < 0:
            raise ValueError(f"max_gap_s must be >= 0, got {max_gap_s}")
        if max_shift <= 0 or max_size_ratio < 1:
            raise ValueError(f"max_shift must be > 0 and max_size_ratio >= 1, got {max_shift}, {max_size_ratio}")
        self.max_gap_s = max_gap_s
        self.max_shift = max_shift
        self.max_size_ratio = max_size_ratio
        self.tracks: list[_Track] = []
        self.next_id = 1
        self.time_s: float | None = None

    def update(self, boxes: Sequence[Sequence[float]], time_s: float) -> list[int]:
        """The track id of each box of the frame at `time_s` (seconds, non-decreasing), in the boxes' order."""
        if self.time_s is not None and time_s < self.time_s:
            raise ValueError(f"frame times must not go backwards: {time_s} after {self.time_s}")
        self.time_s = time_s
        self.tracks = [t for t in self.tracks if time_s - t.time_s <= self.max_gap_s]
        observed = [np.asarray(box, dtype=np.float64) for box in boxes]
        pairs = []
        for ti, track in enumerate(self.tracks):
            expected = track.predicted(time_s)
            for bi, box in enumerate(observed):
                cost = self._cost(expected, box)
                if cost is not None:
                    pairs.append((cost, ti, bi))
        ids: list[int | None] = [None] * len(observed)
        used_tracks: set[int] = set()
        for _, ti, bi in sorted(pairs):
            if ti in used_tracks or ids[bi] is not None:
                continue
            used_tracks.add(ti)
            track = self.tracks[ti]
            self._follow(track, observed[bi], time_s)
            ids[bi] = track.track_id
        for bi, box in enumerate(observed):
            if ids[bi] is None:
                track = _Track(self.next_id, box.copy(), np.zeros(4), time_s)
                self.next_id += 1
                self.tracks.append(track)
                ids[bi] = track.track_id
        return [int(i) for i in ids if i is not None]

    def _cost(self, expected: np.ndarray, box: np.ndarray) -> float | None:
        """Lower is a better match; None: too far or too different in size to be the same face."""
        size = math.sqrt(expected[2] * expected[3])
        centre_shift = math.dist(expected[:2] + expected[2:] / 2, box[:2] + box[2:] / 2) / size
        size_ratio = math.sqrt(box[2] * box[3]) / size
        if centre_shift > self.max_shift or not 1 / self.max_size_ratio <= size_ratio <= self.max_size_ratio:
            return None
        return (1.0 - box_iou(expected, box)) + centre_shift + abs(math.log(size_ratio))

    @staticmethod
    def _follow(track: _Track, box: np.ndarray, time_s: float) -> None:
        dt = time_s - track.time_s
        if dt > 0:
            measured = (box - track.box) / dt
            # the first match sets the velocity; later ones average, which steadies it against detector jitter
            track.velocity = measured if track.matches == 1 else 0.5 * track.velocity + 0.5 * measured
        track.box = box.copy()
        track.time_s = time_s
        track.matches += 1


class ProbabilitySmoother:
    """Per-track exponential smoothing of probability vectors with a time constant `time_constant_s` (0: off)."""

    def __init__(self, time_constant_s: float = DEFAULT_SMOOTH_S) -> None:
        if not time_constant_s >= 0:  # also refuses nan
            raise ValueError(f"the smoothing time constant must be >= 0 seconds, got {time_constant_s}")
        self.time_constant_s = float(time_constant_s)
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def update(self, track_id: int, probs: np.ndarray, time_s: float) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        previous = self._state.get(track_id)
        if previous is None or self.time_constant_s == 0:
            smoothed = probs
        else:
            state, last_time = previous
            weight = 1.0 - math.exp(-max(time_s - last_time, 0.0) / self.time_constant_s)
            smoothed = state + weight * (probs - state)
        self._state[track_id] = (smoothed, time_s)
        return smoothed

    def forget(self, keep: set[int]) -> None:
        """Drop the state of every track not in `keep` (ended tracks), so memory stays bounded on a webcam."""
        self._state = {track_id: value for track_id, value in self._state.items() if track_id in keep}


class EmotionTracker:
    """Track ids and smoothed probabilities for the `FaceRecord`s of consecutive video (or webcam) frames."""

    def __init__(self, smooth_s: float = DEFAULT_SMOOTH_S, max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        self.tracker = FaceTracker(max_gap_s=max_gap_s)
        self.smoother = ProbabilitySmoother(smooth_s)

    def update(self, faces: Sequence[FaceRecord], time_s: float) -> list[FaceRecord]:
        ids = self.tracker.update([face.box for face in faces], time_s)
        tracked = []
        for face, track_id in zip(faces, ids, strict=True):
            names = list(face.probs)
            smoothed = self.smoother.update(track_id, np.array([face.probs[n] for n in names]), time_s)
            tracked.append(replace(face, track_id=track_id,
                                   smoothed_probs={n: float(p) for n, p in zip(names, smoothed, strict=True)}))
        self.smoother.forget({track.track_id for track in self.tracker.tracks})
        return tracked
