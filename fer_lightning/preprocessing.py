"""Turning a face (a FER2013 image or a crop from a photo) into classifier input, without torch.

Training, evaluation, the recogniser and the onnxruntime path all end in :func:`prepare_face`, so the classifier
sees a face prepared the same way whatever the source. A crop from a photo first goes through
:func:`face_to_fer`, which reproduces what FER2013 itself is: a roughly square grayscale face resized to 48x48.
This module imports numpy and OpenCV only, so the torch-free inference path can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

FER_FACE_SIZE = 48  # FER2013 faces are 48x48 grayscale; models are trained on exactly that
Transform = Callable[..., dict]
Box = tuple[int, int, int, int]  # x, y, w, h in pixels


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale from gray (HxW or HxWx1), BGR or BGRA input (OpenCV's channel order)."""
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA) image, got shape {image.shape}")


def square_box(box: Sequence[float], margin: float) -> Box:
    """The square around a face box, grown by ``margin`` (a fraction of its side) on every side.

    FER2013 faces are square; YuNet's boxes are taller than wide, so the crop is squared on the longer side (which
    alone matches FER2013's framing best, see experiments/inference/README.md) and optionally widened.
    """
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {tuple(box)} has no area")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    left, top = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    size = max(1, int(round(side)))
    return left, top, size, size


def crop_with_padding(gray: np.ndarray, box: Box) -> np.ndarray:
    """Crop ``box`` out of ``gray``; parts outside the image are filled by replicating the border."""
    x, y, w, h = box
    height, width = gray.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"face box {box} lies outside the {width}x{height} image")
    crop = gray[y0:y1, x0:x1]
    pad = (y0 - y, (y + h) - y1, x0 - x, (x + w) - x1)
    if any(pad):
        crop = cv2.copyMakeBorder(crop, pad[0], pad[1], pad[2], pad[3], cv2.BORDER_REPLICATE)
    return crop


def eye_angle(eyes: Sequence[Sequence[float]]) -> float:
    """Degrees the head is rolled: the angle of the line from the right eye (image left) to the left eye."""
    (xr, yr), (xl, yl) = eyes
    return float(np.degrees(np.arctan2(yl - yr, xl - xr)))


def level_eyes(gray: np.ndarray, box: Box, angle: float) -> np.ndarray:
    """The square `box` cut from `gray` rotated by `angle` degrees about the box centre: a rolled head upright.

    Only a window around the box (its diagonal, so no corner is lost) is rotated, not the whole frame, and pixels
    from outside the image replicate its border, as `crop_with_padding` does.
    """
    x, y, w, h = box
    half = int(np.ceil(max(w, h) * 0.75)) + 1  # > side * sqrt(2) / 2
    cx, cy = x + w / 2.0, y + h / 2.0
    window_box = (int(round(cx)) - half, int(round(cy)) - half, 2 * half, 2 * half)
    window = crop_with_padding(gray, window_box)
    centre = (cx - window_box[0], cy - window_box[1])
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    upright = cv2.warpAffine(window, matrix, (window.shape[1], window.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    return crop_with_padding(upright, (x - window_box[0], y - window_box[1], w, h))


def face_to_fer(image: np.ndarray, box: Sequence[float] | None = None, margin: float = 0.0,
                eyes: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """A 48x48 uint8 grayscale face, framed like FER2013, from a whole image (``box=None``) or a face box in it.

    ``eyes`` (right, left eye centres, as YuNet gives them) aligns the face first: FER2013's faces are mostly
    upright, and a rolled head (a tilted phone, a head on a hand) is a pose the model saw rarely.
    """
    gray = to_gray(image)
    if box is None:
        crop = gray
    elif eyes is not None:
        crop = level_eyes(gray, square_box(box, margin), eye_angle(eyes))
    else:
        crop = crop_with_padding(gray, square_box(box, margin))
    if crop.shape == (FER_FACE_SIZE, FER_FACE_SIZE):
        return np.ascontiguousarray(crop)
    # INTER_AREA when shrinking (anti-aliased, like a downscaled photo); INTER_LINEAR for tiny faces.
    shrinking = crop.shape[0] >= FER_FACE_SIZE and crop.shape[1] >= FER_FACE_SIZE
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(crop, (FER_FACE_SIZE, FER_FACE_SIZE), interpolation=interpolation)


def prepare_face(face: np.ndarray, transform: Transform) -> np.ndarray:
    """Apply the model's albumentations pipeline to one uint8 face and return (C, H, W) float32.

    The pipeline is the one stored in the checkpoint (resize to the model's input size, then its normalisation),
    so there is exactly one definition of what the model sees.
    """
    out = transform(image=face)["image"]
    if out.dtype != np.float32:
        raise TypeError(
            f"the transform pipeline returned {out.dtype}; it must end with albumentations.Normalize "
            "(see conf/transforms/) so the model gets normalised float32 input"
        )
    out = out[np.newaxis] if out.ndim == 2 else out.transpose(2, 0, 1)
    return np.ascontiguousarray(out)
