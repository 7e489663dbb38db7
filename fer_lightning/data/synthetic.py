"""Procedurally drawn stand-ins for FER2013 faces, so the demo and the tests run without any download.

Each expression is told apart by the same cues a person would use (mouth shape, brow slant, eye opening),
with per-image parameter ranges that overlap between neighbouring classes, plus pose jitter, lighting,
noise and blur. That keeps the task learnable by a small CNN in a few CPU epochs while no single pixel or
fixed template solves it, so a pipeline bug (shuffled labels, broken transforms) still shows up as a
collapse to chance. Numbers from these faces say nothing about FER2013 itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fer_lightning.labels import EMOTION_TO_ID, NUM_CLASSES

# Class ids by name, so the drawings follow the project-wide order in `labels.py` whatever it is.
ANGRY, DISGUST, FEAR, HAPPY, SAD, SURPRISE, NEUTRAL = (
    EMOTION_TO_ID[name] for name in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
)
_SUPERSAMPLE = 4  # draw at 4x and shrink with INTER_AREA: anti-aliased strokes at sub-pixel precision
_AA = cv2.LINE_AA

# Per class: (eye half-height range, brow lift range, inner-brow offset range), in face-width units.
# Image y grows downwards, so a negative lift raises a brow and a positive inner offset lowers its inner end.
_EYE_OPEN = {ANGRY: (0.009, 0.019), DISGUST: (0.007, 0.017), FEAR: (0.032, 0.048), HAPPY: (0.015, 0.028),
             SAD: (0.016, 0.028), SURPRISE: (0.038, 0.055), NEUTRAL: (0.020, 0.032)}
_BROW_LIFT = {ANGRY: (0.005, 0.025), DISGUST: (0.0, 0.02), FEAR: (-0.05, -0.025), HAPPY: (-0.015, 0.005),
              SAD: (-0.02, 0.0), SURPRISE: (-0.075, -0.04), NEUTRAL: (-0.01, 0.01)}
_BROW_INNER = {ANGRY: (0.025, 0.05), DISGUST: (0.005, 0.025), FEAR: (-0.035, -0.015), HAPPY: (-0.008, 0.008),
               SAD: (-0.045, -0.022), SURPRISE: (-0.01, 0.01), NEUTRAL: (-0.008, 0.008)}


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _pts(xs: np.ndarray, ys: np.ndarray, w: int) -> np.ndarray:
    """Face-unit coordinates -> int32 pixel polyline, the only layout cv2's polygon calls accept."""
    return np.round(np.stack([xs, ys], axis=1) * w).astype(np.int32).reshape(-1, 1, 2)


def _lip(t: np.ndarray, cx: float, cy: float, half_w: float, bend: float) -> tuple[np.ndarray, np.ndarray]:
    """A parabola through the mouth corners: bend > 0 lifts the corners (smile), bend < 0 drops them."""
    return cx + half_w * t, cy - bend * t**2


def _draw_mouth(
    img: np.ndarray, label: int, rng: np.random.Generator, ink: int, cx: float, cy: float
) -> None:
    w = img.shape[0]
    t = np.linspace(-1.0, 1.0, 25)
    thick = max(1, round(_u(rng, 0.018, 0.03) * w))
    if label == SURPRISE:  # round "O"
        axes = (round(_u(rng, 0.04, 0.07) * w), round(_u(rng, 0.06, 0.1) * w))
        cv2.ellipse(img, (round(cx * w), round((cy + 0.01) * w)), axes, 0, 0, 360, ink, -1, _AA)
        return
    if label == FEAR:  # wide, stretched, corners pulled down
        hw, opening, droop = _u(rng, 0.1, 0.14), _u(rng, 0.025, 0.05), _u(rng, 0.0, 0.02)
        xs, upper = _lip(t, cx, cy, hw, -droop)
        lower = upper + opening * (1 - t**2) ** 0.7
        upper = upper - 0.4 * opening * (1 - t**2)
        cv2.fillPoly(img, [_pts(np.r_[xs, xs[::-1]], np.r_[upper, lower[::-1]], w)], ink, _AA)
        return
    if label == DISGUST:  # one side of the upper lip raised, slightly wavy
        hw, side, lift = _u(rng, 0.08, 0.12), rng.choice([-1.0, 1.0]), _u(rng, 0.025, 0.05)
        xs, ys = _lip(t, cx, cy, hw, _u(rng, -0.02, 0.005))
        ys = ys - lift * np.clip(side * t, 0, 1) ** 1.5 + _u(rng, 0.003, 0.01) * np.sin(2.5 * np.pi * t)
        cv2.polylines(img, [_pts(xs, ys, w)], False, ink, thick, _AA)
        return
    hw, bend = {HAPPY: (_u(rng, 0.1, 0.15), _u(rng, 0.03, 0.07)),
                SAD: (_u(rng, 0.08, 0.12), _u(rng, -0.06, -0.025)),
                ANGRY: (_u(rng, 0.06, 0.1), _u(rng, -0.025, 0.005)),
                NEUTRAL: (_u(rng, 0.08, 0.13), _u(rng, -0.012, 0.012))}[label]
    xs, ys = _lip(t, cx, cy, hw, bend)
    if label == HAPPY and rng.random() < 0.5:  # open grin: dark polygon under the smile line
        lower = ys + _u(rng, 0.025, 0.05) * (1 - t**2)
        cv2.fillPoly(img, [_pts(np.r_[xs, xs[::-1]], np.r_[ys, lower[::-1]], w)], ink, _AA)
    cv2.polylines(img, [_pts(xs, ys, w)], False, ink, thick + (label == ANGRY), _AA)


def _draw_eyes_and_brows(img: np.ndarray, label: int, rng: np.random.Generator, ink: int, skin: int) -> None:
    w = img.shape[0]
    eye_y, eye_dx, eye_hw = _u(rng, 0.41, 0.45), _u(rng, 0.13, 0.16), _u(rng, 0.045, 0.062)
    eye_hh = _u(rng, *_EYE_OPEN[label])
    brow_y, lift = eye_y - _u(rng, 0.075, 0.095), _u(rng, *_BROW_LIFT[label])
    inner, arch = _u(rng, *_BROW_INNER[label]), _u(rng, 0.0, 0.02) + 0.02 * (label in (SURPRISE, HAPPY))
    brow_thick = max(1, round(_u(rng, 0.022, 0.035) * w))
    sclera = int(min(255, skin + _u(rng, 15, 50)))
    lowered = rng.choice([-1.0, 1.0])  # disgust lowers one brow only
    for side in (-1.0, 1.0):
        ex, hh = 0.5 + side * eye_dx, eye_hh * _u(rng, 0.9, 1.1)
        centre, axes = (round(ex * w), round(eye_y * w)), (round(eye_hw * w), max(1, round(hh * w)))
        cv2.ellipse(img, centre, axes, 0, 0, 360, sclera, -1, _AA)
        pupil = max(1, round(min(_u(rng, 0.016, 0.022), hh) * w))
        cv2.ellipse(img, centre, (pupil, max(1, round(min(pupil / w, hh) * w))), 0, 0, 360, ink, -1, _AA)
        cv2.ellipse(img, centre, axes, 0, 0, 360, ink, max(1, round(0.012 * w)), _AA)
        bx = 0.5 + side * np.array([eye_dx - eye_hw - 0.01, eye_dx, eye_dx + eye_hw + 0.015])
        by = brow_y + lift + np.array([inner, -arch, 0.0])
        if label == DISGUST and side == lowered:
            by = by + _u(rng, 0.02, 0.04)
        cv2.polylines(img, [_pts(bx, by, w)], False, ink, brow_thick, _AA)


def draw_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One face, uint8 array of shape (size, size).

    All randomness comes from `rng`, so a seeded generator reproduces a dataset exactly; identity-like
    nuisances (tones, hair, proportions) are drawn independently of the label so they carry no class signal.
    """
    if int(label) != label or not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be an integer class id in 0..{NUM_CLASSES - 1}, got {label!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels to draw facial features, got {size}")
    label, w = int(label), size * _SUPERSAMPLE
    bg, skin = _u(rng, 10, 235), _u(rng, 105, 225)
    ink = int(max(0, skin - _u(rng, 80, 150)))
    img = np.full((w, w), bg, np.uint8)

    # Hair, neck and face oval: constant structure so the picture reads as a face, not as a class cue.
    face_a, face_b, face_y = _u(rng, 0.31, 0.37), _u(rng, 0.4, 0.46), _u(rng, 0.5, 0.54)
    cv2.rectangle(img, (round((0.5 - face_a * 0.5) * w), round(face_y * w)),
                  (round((0.5 + face_a * 0.5) * w), w), int(skin * 0.85), -1, _AA)
    if rng.random() < 0.75:
        hair_axes = (round((face_a + _u(rng, 0.01, 0.05)) * w), round(face_b * w))
        hair_centre = (w // 2, round((face_y - _u(rng, 0.05, 0.1)) * w))
        cv2.ellipse(img, hair_centre, hair_axes, 0, 0, 360, int(_u(rng, 0, 255)), -1, _AA)
    face_axes = (round(face_a * w), round(face_b * w))
    cv2.ellipse(img, (w // 2, round(face_y * w)), face_axes, 0, 0, 360, int(skin), -1, _AA)

    _draw_eyes_and_brows(img, label, rng, ink, int(skin))
    nose_y, nose_dx = _u(rng, 0.56, 0.6), _u(rng, 0.025, 0.04)
    nose_ink = int((ink + skin) / 2)
    nose = _pts(0.5 + np.array([-nose_dx, 0.0, nose_dx]), np.array([nose_y, nose_y + 0.015, nose_y]), w)
    cv2.polylines(img, [nose], False, nose_ink, max(1, round(0.012 * w)), _AA)
    if label == DISGUST and rng.random() < 0.6:  # nose wrinkles
        for side in (-1.0, 1.0):
            xs = 0.5 + side * np.array([0.03, 0.05])
            cv2.polylines(img, [_pts(xs, np.array([nose_y - 0.07, nose_y - 0.04]), w)], False, nose_ink,
                          max(1, round(0.01 * w)), _AA)
    _draw_mouth(img, label, rng, ink, 0.5 + _u(rng, -0.01, 0.01), _u(rng, 0.68, 0.73))

    # Pose: rotation, scale and a +-3 px shift (in output pixels) applied to the finished drawing.
    m = cv2.getRotationMatrix2D((w / 2, w / 2), _u(rng, -10, 10), _u(rng, 0.9, 1.1))
    m[:, 2] += rng.uniform(-3, 3, size=2) * _SUPERSAMPLE * size / 48
    img = cv2.warpAffine(img, m, (w, w), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)

    # Photometric nuisances: contrast, a linear lighting ramp, blotchy low-frequency shading, noise, blur.
    out = (out - out.mean()) * _u(rng, 0.7, 1.2) + out.mean()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    theta = _u(rng, 0, 2 * np.pi)
    out += _u(rng, 0, 70) * (xx * np.cos(theta) + yy * np.sin(theta))
    blotch = rng.normal(0, 1, (4, 4)).astype(np.float32)
    out += _u(rng, 0, 15) * cv2.resize(blotch, (size, size), interpolation=cv2.INTER_CUBIC)
    out += rng.normal(0, _u(rng, 2, 12), out.shape).astype(np.float32)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), _u(rng, 0.5, 1.0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _class_counts(num_images: int, class_probs: Sequence[float] | None) -> np.ndarray:
    """Exact per-class counts (largest remainder), so a split's class mix never depends on sampling luck."""
    if class_probs is None:
        probs = np.full(NUM_CLASSES, 1.0 / NUM_CLASSES)
    else:
        probs = np.asarray(class_probs, dtype=np.float64)
        if probs.shape != (NUM_CLASSES,):
            raise ValueError(f"class_probs needs {NUM_CLASSES} entries (one per emotion), got {probs.size}")
        if not np.all(np.isfinite(probs)) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0, atol=1e-6):
            raise ValueError(f"class_probs must be non-negative and sum to 1, got {probs.tolist()}")
    exact = probs * num_images
    counts = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: num_images - counts.sum()]] += 1
    return counts


def make_synthetic_faces(num_images: int, seed: int, size: int = 48,
                         class_probs: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 (N,size,size), labels int64 (N,)). Deterministic for a given seed.

    Balanced by default so accuracy on synthetic data is easy to read against 1/7 chance; pass
    `class_probs` (7 values summing to 1) to mimic FER2013's imbalance when exercising class weighting.
    Labels are shuffled so any prefix of the arrays is a fair sample.
    """
    if int(num_images) != num_images or num_images < 0:
        raise ValueError(f"num_images must be a non-negative integer, got {num_images}")
    num_images = int(num_images)
    counts = _class_counts(num_images, class_probs)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), counts))
    images = np.empty((num_images, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = draw_face(int(label), rng, size)
    return images, labels
