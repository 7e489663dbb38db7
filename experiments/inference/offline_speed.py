"""The finder as a fresh install runs it (no network, no environment variable, an empty cache), before and after
YuNet moved into the package, tracks and steady labels, timelines and the group-photo layout.

    python experiments/inference/offline_speed.py --before 82953fc --video woman2_640x480.mp4 \
        --fer ../shared/data/fer2013.zip --out experiments/inference/results/offline_speed.json

`--before` is a commit of this repository, checked out into a temporary worktree and run from there (its own
`fer_lightning` package, same Python environment). Each setting runs `python -m fer_lightning.predict` 3 times,
alternating before and after; frames/s and wall times come from each run's `summary.json`. The environment has
`FER_LIGHTNING_YUNET_MODEL` removed, `FER_LIGHTNING_CACHE` pointed at an empty folder, and an unreachable proxy, so
nothing can be downloaded.

- Video: a 640x480 one-face video, every setting at its defaults (before: `detector=auto` falls back to Haar).
- Photos: a folder of photos (10 composed group photos of 24 faces, 30 copies of a one-face portrait), both with
  YuNet (before: given the package's model file), annotated: the photo path's speed, like for like.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def photo_folder(folder: Path, fer_zip: Path) -> Path:
    sys.path.insert(0, str(REPO / "experiments" / "inference"))
    sys.path.insert(0, str(REPO / "tests"))
    import group_photo
    from conftest import face_photo

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    faces = group_photo.public_test_faces(fer_zip)
    for i in range(10):
        cv2.imwrite(str(folder / f"group_{i:02d}.jpg"), group_photo.compose(faces, rng)[0])
    portrait = face_photo()
    for i in range(30):
        cv2.imwrite(str(folder / f"portrait_{i:02d}.jpg"), portrait if i % 2 else cv2.flip(portrait, 1))
    return folder


def predict(checkout: Path, args: list[str], env: dict[str, str]) -> dict:
    output = Path(tempfile.mkdtemp(prefix="offline_speed_"))
    result = subprocess.run([sys.executable, "-m", "fer_lightning.predict", *args, f"output={output}",
                             "progress=false"], cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"predict failed in {checkout}: {result.stderr[-2000:]}")
    summary = json.loads((output / "summary.json").read_text())
    return {"fps": summary["fps"], "wall_s": summary["wall_s"], "detector": summary["detector"],
            "faces": summary["faces"], "frames": summary["frames"],
            "haar_fallback_warning": "Falling back to the Haar" in result.stderr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--video", type=Path, required=True, help="a 640x480 video with one face")
    parser.add_argument("--fer", type=Path, required=True, help="fer2013.zip, for the group photos")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="offline_speed_"))
    before = scratch / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before], check=True,
                   capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("FER_LIGHTNING_YUNET_MODEL", "PYTHONPATH")}
    imported = subprocess.run([sys.executable, "-c", "import fer_lightning; print(fer_lightning.__file__)"],
                              cwd=before, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not imported.startswith(str(before)):
        raise SystemExit(f"the 'before' run would import {imported}, not the worktree's package")
    env.update(FER_LIGHTNING_CACHE=str(scratch / "empty_cache"), https_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", OMP_NUM_THREADS="2")
    photos = photo_folder(scratch / "photos", args.fer)
    packaged = REPO / "fer_lightning" / "assets" / "face_detection_yunet.onnx"
    settings = {
        "video, defaults": ([f"input={args.video.resolve()}"], [f"input={args.video.resolve()}"]),
        "photos, YuNet, annotated": ([f"input={photos}", f"yunet_model={packaged}"], [f"input={photos}"]),
    }
    results: dict[str, dict] = {}
    try:
        for name, (before_args, after_args) in settings.items():
            runs: dict[str, list[dict]] = {"before": [], "after": []}
            for _ in range(args.runs):
                runs["before"].append(predict(before, before_args, env))
                runs["after"].append(predict(REPO, after_args, env))
            results[name] = {side: {"median_fps": statistics.median(r["fps"] for r in rs),
                                    "median_wall_s": statistics.median(r["wall_s"] for r in rs), "runs": rs}
                             for side, rs in runs.items()}
            b, a = results[name]["before"], results[name]["after"]
            print(f"{name}: before {b['median_fps']:.1f} frames/s ({b['runs'][0]['detector']}), after "
                  f"{a['median_fps']:.1f} frames/s ({a['runs'][0]['detector']}); all before: "
                  f"{[r['fps'] for r in b['runs']]}, all after: {[r['fps'] for r in a['runs']]}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    if args.out:
        args.out.write_text(json.dumps({"before": args.before, "video": str(args.video), "settings": results},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
