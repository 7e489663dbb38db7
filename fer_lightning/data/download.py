"""Finding FER2013 on disk, and fetching it with kagglehub when the user asks for it."""

from __future__ import annotations

import logging
from pathlib import Path

from fer_lightning.errors import FERLightningError

log = logging.getLogger(__name__)

KAGGLE_DATASET = "msambare/fer2013"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_DATASET}"
# Names under which people keep FER2013 inside a data folder, most specific first.
_KNOWN_FILES = ("fer2013.csv", "icml_face_data.csv", "fer2013.zip", "archive.zip")


class FER2013NotFoundError(FERLightningError, FileNotFoundError):
    """No FER2013 where the config points; the message says where it looked and how to get the data."""


GET_FER2013_HINT = (
    f"Fix: data.root=path/to/fer2013.zip (the archive from {KAGGLE_URL}, its unzipped folder, or fer2013.csv), "
    "export FER2013_ROOT=that path once, or add data.download=true (kagglehub fetches it; needs internet)"
)


def how_to_get_fer2013() -> str:
    return (
        "Get FER2013 in any of its forms:\n"
        f"  * Kaggle image folders: download {KAGGLE_URL} (archive.zip: train/, test/) and point data.root at\n"
        "    the .zip or the unzipped folder;\n"
        "  * with kagglehub: python -c \"import kagglehub; print(kagglehub.dataset_download('msambare/fer2013'))\"\n"
        "    or simply add data.download=true to the command;\n"
        "  * the original CSV (fer2013.csv or icml_face_data.csv from the Kaggle challenge): data.root=PATH.csv.\n"
        "Set it once with: export FER2013_ROOT=/path/to/fer2013(.zip|.csv|folder)"
    )


def resolve_source(root: str | Path) -> Path:
    """Turn `data.root` into a concrete source: an image folder, a .zip or a .csv.

    A folder is accepted as the image layout itself (it has `train/`) or as a folder that holds one of the
    usual file names, so both `data/fer2013/` and `data/fer2013/fer2013.csv` work.
    """
    root = Path(root).expanduser()
    if root.is_file():
        return root
    if root.is_dir():
        if (root / "train").is_dir():
            return root
        for name in _KNOWN_FILES:
            if (root / name).is_file():
                return root / name
        nested = [p for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()]
        if len(nested) == 1:
            return nested[0]
        raise FER2013NotFoundError(
            f"{root.resolve()} (data.root) holds neither train/ and test/ folders nor one of "
            f"{', '.join(_KNOWN_FILES)}. "
            + GET_FER2013_HINT
        )
    raise FER2013NotFoundError(
        f"FER2013 not found at {root.resolve()} (data.root; defaults to $FER2013_ROOT, else data/fer2013). "
        + GET_FER2013_HINT
    )


def download_fer2013() -> Path:
    """Fetch the Kaggle image-folder version with kagglehub (needs internet; Kaggle credentials if required)."""
    try:
        import kagglehub
    except ImportError as err:  # pragma: no cover - kagglehub is a dependency
        raise RuntimeError("data.download=true needs kagglehub: pip install kagglehub") from err
    log.info("Downloading FER2013 (%s) with kagglehub ...", KAGGLE_DATASET)
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as err:  # kagglehub raises many types: network, auth, HTTP
        raise RuntimeError(
            f"Could not download FER2013 from Kaggle ({KAGGLE_DATASET}): {type(err).__name__}: {err}\n"
            "This machine may be offline or lack Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/"
            "KAGGLE_KEY). Download it by hand instead and set data.root.\n" + how_to_get_fer2013()
        ) from err
    log.info("FER2013 downloaded to %s", path)
    return path
