"""Group photos: how many faces YuNet finds at each face size, and what the finder reads on them.

    python experiments/inference/group_photo.py --fer ../shared/data/fer2013.zip --photos 10 --upscale 1 2 \
        --out experiments/inference/results/group_photo.json --example /tmp/group_photo.jpg \
        --astronaut-example experiments/inference/group_photo_astronaut.jpg

Each composed photo holds 24 real faces from FER2013's PublicTest (4 per size, at 24, 32, 48, 64, 96 and 128 px,
smaller ones further back as in a group photo), each upscaled from its 48x48 crop with its border extended by a
third of its size (a face in a picture, not a crop on a wall), on a blurred-noise background. The finder runs with
its defaults (YuNet from the package, alignment on, the shipped model), and with each `--upscale` given
(`detect_upscale`: detection on the photo enlarged that many times). The same photos are used for every
setting. A placed face counts as found when a
detection's centre lies inside it and the detection's size is within 0.5-2x of it; its emotion is right when the
finder's label is its FER2013 label. All faces of a photo are classified in one batch (the script counts batches).

`--example` writes the first photo annotated (FER2013 faces: keep it out of the repository, like the data);
`--astronaut-example` writes a group photo of the public-domain astronaut portrait (scikit-image's) at 24 sizes,
annotated, the one shown in the README.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.inference.annotate import annotate
from fer_lightning.inference.recognizer import EmotionRecognizer

SIZES = (24, 32, 48, 64, 96, 128)
PER_SIZE = 4
CONTEXT = 1 / 3  # border around each face, as a fraction of its size


def public_test_faces(fer_zip: Path) -> list[tuple[str, str, bytes]]:
    with zipfile.ZipFile(fer_zip) as archive:
        names = sorted(n for n in archive.namelist() if "/PublicTest_" in n and n.endswith(".jpg"))
        return [(n, n.split("/")[-2], archive.read(n)) for n in names]


def compose(faces: list[tuple[str, str, bytes]], rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """One group photo and, for each placed face, its square (x, y, s), size and FER2013 label."""
    cells = [(size, int(size * (1 + 2 * CONTEXT) + 12)) for size in SIZES]
    width = max(PER_SIZE * cell for _, cell in cells) + 40
    height = sum(cell for _, cell in cells) + 40
    # a calm, uneven backdrop: low-frequency colour blotches, like an out-of-focus room
    noise = rng.normal(128, 35, (height // 40 + 2, width // 40 + 2, 3)).clip(0, 255).astype(np.uint8)
    canvas = cv2.GaussianBlur(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 9)
    placed, top = [], 20
    chosen = rng.choice(len(faces), size=len(SIZES) * PER_SIZE, replace=False)
    for row, (size, cell) in enumerate(cells):
        for col in range(PER_SIZE):
            name, label, data = faces[chosen[row * PER_SIZE + col]]
            face = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            face = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC if size > 48 else cv2.INTER_AREA)
            pad = int(round(size * CONTEXT))
            tile = cv2.cvtColor(cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE), cv2.COLOR_GRAY2BGR)
            left = 20 + col * cell + (cell - tile.shape[1]) // 2
            canvas[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
            placed.append({"name": name, "label": label, "size": size, "x": left + pad, "y": top + pad})
        top += cell
    return canvas, placed


def match(placed: list[dict], records: list) -> list[dict]:
    """Each placed face with the detection that covers it (centre inside, size 0.5-2x), if any."""
    used: set[int] = set()
    for face in placed:
        face["found"], face["predicted"] = False, None
        for j, record in enumerate(records):
            x, y, w, h = record.box
            cx, cy = x + w / 2, y + h / 2
            inside = face["x"] <= cx <= face["x"] + face["size"] and face["y"] <= cy <= face["y"] + face["size"]
            if j not in used and inside and 0.5 <= np.sqrt(w * h) / face["size"] <= 2.0:
                used.add(j)
                face["found"], face["predicted"] = True, record.label
                break
    return placed


def evaluate(faces: list, photos: int, seed: int, upscale: float, example: Path | None) -> dict:
    rng = np.random.default_rng(seed)
    options = {"upscale": upscale} if upscale != 1.0 else None
    recognizer = EmotionRecognizer.from_checkpoint(detector="yunet", detector_options=options)
    batches: list[int] = []
    original = recognizer.predict_faces

    def counting(batch: list) -> np.ndarray:
        batches.append(len(batch))
        return original(batch)

    recognizer.predict_faces = counting  # type: ignore[method-assign]
    results, seconds, unmatched = [], [], 0
    for index in range(photos):
        photo, placed = compose(faces, rng)
        started = time.perf_counter()
        records = recognizer.predict(photo)
        seconds.append(time.perf_counter() - started)
        results += match(placed, records)
        unmatched += len(records) - sum(face["found"] for face in placed)
        if index == 0 and example:
            cv2.imwrite(str(example), annotate(photo, records))
    rows = []
    for size in SIZES:
        at = [r for r in results if r["size"] == size]
        found = [r for r in at if r["found"]]
        right = sum(r["predicted"] == r["label"] for r in found)
        rows.append({"size_px": size, "faces": len(at), "found": len(found), "found_pct": 100 * len(found) / len(at),
                     "right": right, "right_pct_of_found": 100 * right / len(found) if found else None})
    return {"detect_upscale": upscale, "photo_size": [int(photo.shape[1]), int(photo.shape[0])],
            "median_ms_per_photo": round(1000 * float(np.median(seconds)), 1),
            "classifier_calls_per_photo": len(batches) / photos, "batch_sizes": batches,
            "unmatched_detections": unmatched, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer", type=Path, required=True, help="fer2013.zip (Kaggle layout)")
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--upscale", type=float, nargs="+", default=[1.0], help="detect_upscale settings to compare")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--example", type=Path, help="the first photo, annotated (one file per --upscale)")
    parser.add_argument("--astronaut-example", type=Path, help="a public-domain group photo, annotated")
    args = parser.parse_args()
    if args.astronaut_example:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from test_group_photo import group_photo  # the tests' 24 astronaut faces of 32-128 px

        photo, _ = group_photo()
        records = EmotionRecognizer.from_checkpoint(detector="yunet").predict(photo)
        cv2.imwrite(str(args.astronaut_example), annotate(photo, records), [cv2.IMWRITE_JPEG_QUALITY, 88])
    faces = public_test_faces(args.fer)
    settings = []
    for upscale in args.upscale:
        example = None
        if args.example:
            example = args.example if upscale == args.upscale[0] else \
                args.example.with_stem(f"{args.example.stem}_upscale{upscale:g}")
        result = evaluate(faces, args.photos, args.seed, upscale, example)
        settings.append(result)
        width, height = result["photo_size"]
        print(f"detect_upscale={upscale:g}: {args.photos} photos of {len(SIZES) * PER_SIZE} faces ({width}x{height}), "
              f"{result['median_ms_per_photo']:.0f} ms per photo (median), classifier calls per photo: "
              f"{result['classifier_calls_per_photo']:g}, detections matching no placed face: "
              f"{result['unmatched_detections']}")
        print("| face size (px) | faces | found by YuNet | emotion right (of found) |")
        print("| --- | --- | --- | --- |")
        for r in result["rows"]:
            right = "n/a" if r["right_pct_of_found"] is None else f"{r['right']} ({r['right_pct_of_found']:.0f}%)"
            print(f"| {r['size_px']} | {r['faces']} | {r['found']} ({r['found_pct']:.0f}%) | {right} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"photos": args.photos, "seed": args.seed,
                                        "faces_per_photo": len(SIZES) * PER_SIZE, "settings": settings},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
