"""The one class order every source, model, metric and prediction file agrees on.

FER2013's CSV ids define it (0=angry ... 6=neutral). The Kaggle image folders name classes alphabetically
instead, so readers map folder names onto these ids rather than sorting folder names.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES: int = len(EMOTIONS)
EMOTION_TO_ID: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

# Split codes stored in arrays and caches; names follow the official FER2013 protocol.
TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
# FER2013 `Usage` values (CSV) and file-name prefixes (image folders) -> split code.
USAGE_TO_SPLIT: dict[str, int] = {"Training": TRAIN, "PublicTest": VAL, "PrivateTest": TEST}
