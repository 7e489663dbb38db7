"""`python -m fer_lightning.predict` on every input kind: photo, folder, video file, webcam; and bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import YUNET_ENV, face_photo, make_face_video, yunet_model_file

from fer_lightning.cli.predict import EXIT_BAD_INPUT, EXIT_SOME_UNREADABLE, parse_args
from fer_lightning.inference.pipeline import PredictConfig, run
from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.inference.video import InputError, VideoStream, resolve_input
from fer_lightning.labels import EMOTIONS

RECORD_KEYS = {"source", "frame", "time_s", "box", "score", "label", "probs"}
VIDEO_KEYS = RECORD_KEYS | {"track_id", "smoothed_label", "smoothed_probs"}  # videos and webcams add tracks


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_lightning.predict", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]


def _check_face_record(record: dict, video: bool = False) -> None:
    assert set(record) == (VIDEO_KEYS if video else RECORD_KEYS)
    assert len(record["box"]) == 4 and all(isinstance(v, int) for v in record["box"])
    assert list(record["probs"]) == list(EMOTIONS) and abs(sum(record["probs"].values()) - 1) < 1e-4
    assert record["label"] == max(record["probs"], key=record["probs"].get)
    if video:
        smoothed = record["smoothed_probs"]
        assert isinstance(record["track_id"], int) and record["track_id"] >= 1
        assert list(smoothed) == list(EMOTIONS) and abs(sum(smoothed.values()) - 1) < 1e-4
        assert record["smoothed_label"] == max(smoothed, key=smoothed.get)


@pytest.fixture(scope="module")
def recognizer(trained_checkpoint) -> EmotionRecognizer:
    return EmotionRecognizer.from_checkpoint(trained_checkpoint, detector="haar")


def test_cli_on_a_photo_writes_records_annotation_and_summary(trained_checkpoint, tmp_path) -> None:
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), face_photo())
    out = tmp_path / "out"
    result = _cli(f"ckpt_path={trained_checkpoint}", f"input={photo}", f"output={out}", "detector=haar", "csv=true")
    assert result.returncode == 0, result.stderr
    assert "1 frame(s), 1 face(s)" in result.stdout
    (record,) = _records(out)
    _check_face_record(record)
    assert record["source"] == str(photo) and record["frame"] == 0 and record["time_s"] is None
    annotated = cv2.imread(str(out / "annotated" / "astronaut.jpg"))
    assert annotated.shape == (512, 512, 3) and not np.array_equal(annotated, cv2.imread(str(photo)))
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0]["label"] == record["label"]
    assert float(rows[0]["p_happy"]) == pytest.approx(record["probs"]["happy"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 1 and summary["faces"] == 1 and summary["detector"] == "haar"
    assert "tracks" not in summary and not (out / "timeline.png").exists()  # photos have no tracks


def test_cli_finds_faces_with_the_packaged_yunet_offline_with_no_setting(tmp_path) -> None:
    """A fresh install's first run: no YuNet variable, an empty cache, no network (a proxy that refuses): the
    default detector is YuNet from the package, with no download and no Haar fallback warning."""
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), face_photo())
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key != "FER_LIGHTNING_YUNET_MODEL"}
    env.update(FER_LIGHTNING_CACHE=str(tmp_path / "empty_cache"), https_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "fer_lightning.predict", f"input={photo}", f"output={out}",
                             "progress=false"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Haar" not in result.stderr and "download" not in result.stderr.lower(), result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detector"] == "yunet" and summary["faces"] == 1
    assert not (tmp_path / "empty_cache").exists()


def test_folder_continues_past_unreadable_files_and_reports_them(recognizer, tmp_path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a_face.png"), face_photo())
    cv2.imwrite(str(folder / "sub" / "b_face.jpg"), face_photo())
    cv2.imwrite(str(folder / "c_empty.png"), np.full((240, 320, 3), 127, np.uint8))
    (folder / "d_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "e_empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not an input")
    out = tmp_path / "out"
    summary = run(PredictConfig(input=str(folder), output=str(out), progress=False), recognizer=recognizer)
    records = _records(out)
    assert [Path(r["source"]).name for r in records] == ["a_face.png", "c_empty.png", "b_face.jpg"]
    _check_face_record(records[0])
    _check_face_record(records[2])
    assert records[1] == {"source": str(folder / "c_empty.png"), "frame": 0, "time_s": None, "label": None}
    assert summary["frames"] == 3 and summary["faces"] == 2 and summary["frames_without_face"] == 1
    assert sorted(Path(u["source"]).name for u in summary["unreadable"]) == ["d_broken.jpg", "e_empty.png"]
    assert all("cannot decode" in u["error"] for u in summary["unreadable"])
    # annotated copies keep their input's format (a PNG stays a PNG)
    assert (out / "annotated" / "sub" / "b_face.jpg").is_file() and (out / "annotated" / "c_empty.png").is_file()
    assert not (out / "annotated" / "c_empty.jpg").exists()


def test_cli_folder_with_unreadable_files_exits_with_its_own_code(trained_checkpoint, tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "face.png"), face_photo())
    (folder / "broken.png").write_bytes(b"garbage")
    result = _cli(f"ckpt_path={trained_checkpoint}", f"input={folder}", f"output={tmp_path / 'out'}",
                  "detector=haar", "annotate=false")
    assert result.returncode == EXIT_SOME_UNREADABLE
    assert "1 file(s) could not be read" in result.stderr and "broken.png" in result.stderr
    assert len(_records(tmp_path / "out")) == 1 and not (tmp_path / "out" / "annotated").exists()


def test_video_is_streamed_with_every_n_frames(recognizer, tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=24, fps=12.0, blank_from=18)
    out = tmp_path / "out"
    summary = run(PredictConfig(input=str(video), output=str(out), every_n_frames=3, progress=False),
                  recognizer=recognizer)
    records = _records(out)
    # one or more records per kept frame (Haar may add a false face), in frame order
    assert sorted({r["frame"] for r in records}) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert [r["frame"] for r in records] == sorted(r["frame"] for r in records)
    assert all(r["time_s"] == pytest.approx(r["frame"] / 12.0) for r in records)
    for record in records:
        if record["frame"] < 18:
            _check_face_record(record, video=True)
        else:
            assert record == {"source": str(video), "frame": record["frame"], "time_s": record["time_s"],
                              "label": None}
    tracks = Counter(r["track_id"] for r in records if r["frame"] < 18)
    assert tracks.most_common(1)[0][1] == 6  # the sliding face is one track in all 6 of its frames
    assert records[0]["smoothed_probs"] == records[0]["probs"]  # a track starts from its first frame
    assert summary["frames"] == 8 and summary["frames_without_face"] == 2 and summary["fps"] > 0
    main = max(summary["tracks"], key=lambda t: t["frames"])
    assert main["frames"] == 6 and main["first_s"] == 0.0 and main["last_s"] == pytest.approx(15 / 12.0)
    assert summary["timeline"] == str(out / "timeline.png") and (out / "timeline.png").stat().st_size > 10_000
    annotated = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(4.0)  # plays at real speed
    assert (annotated.get(cv2.CAP_PROP_FRAME_WIDTH), annotated.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)


def test_video_csv_has_the_track_and_the_smoothed_columns_and_smooth_s_0_is_raw(recognizer, tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=12, fps=12.0)
    out = tmp_path / "out"
    run(PredictConfig(input=str(video), output=str(out), smooth_s=0, csv=True, annotate=False, progress=False),
        recognizer=recognizer)
    records = _records(out)
    assert all(r["smoothed_probs"] == r["probs"] and r["smoothed_label"] == r["label"] for r in records)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == len(records)
    assert {"track_id", "smoothed_label", *(f"smoothed_p_{name}" for name in EMOTIONS)} <= set(rows[0])
    assert [int(row["track_id"]) for row in rows] == [r["track_id"] for r in records]


def test_video_format_webm_writes_a_vp8_video_browsers_play(recognizer, tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=6, fps=12.0)
    summary = run(PredictConfig(input=str(video), output=str(tmp_path / "out"), video_format="webm", progress=False),
                  recognizer=recognizer)
    (path,) = summary["annotated"]
    assert path.endswith("annotated/clip.webm")
    playback = cv2.VideoCapture(path)
    assert playback.get(cv2.CAP_PROP_FRAME_COUNT) in (6, 0) and playback.read()[0]  # WebM headers may omit the count
    with pytest.raises(ValueError, match=r"video_format must be one of \['mp4', 'webm'\], got 'avi'"):
        run(PredictConfig(input=str(video), output=str(tmp_path / "bad"), video_format="avi", progress=False),
            recognizer=recognizer)
    assert not (tmp_path / "bad").exists()


def test_cli_refuses_a_negative_smoothing_time_before_writing_anything(tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=4)
    result = _cli(f"input={video}", f"output={tmp_path / 'out'}", "smooth_s=-0.5", "detector=haar")
    assert result.returncode == EXIT_BAD_INPUT and "time constant must be >= 0" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_video_target_fps_becomes_a_frame_step_and_max_frames_stops(recognizer, tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.avi", frames=24, fps=12.0)
    out = tmp_path / "out"
    summary = run(PredictConfig(input=str(video), output=str(out), fps=4.0, max_frames=5, annotate=False,
                                progress=False), recognizer=recognizer)
    assert sorted({r["frame"] for r in _records(out)}) == [0, 3, 6, 9, 12]
    assert summary["frames"] == 5 and "warning" not in summary


def test_video_is_never_read_whole(tmp_path) -> None:
    """The stream holds one decoded frame at a time: frames are pulled lazily from the capture."""
    video = make_face_video(tmp_path / "clip.mp4", frames=10)
    stream = VideoStream(resolve_input(video))
    frames = iter(stream)
    first = next(frames)
    assert first.index == 0 and stream.frames_read == 1
    next(frames)
    assert stream.frames_read == 2 and stream.frame_count == 10


def test_truncated_video_is_reported(recognizer, tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=24)
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        summary = run(PredictConfig(input=str(cut), output=str(tmp_path / "out"), annotate=False, progress=False),
                      recognizer=recognizer)
    except InputError as err:  # the container index can be lost with the tail: then it cannot be opened at all
        assert "cut.mp4" in str(err)
        return
    assert summary["frames"] < 24 and "ended at frame" in summary.get("warning", "ended at frame")


def test_webcam_is_read_through_the_capture_with_clock_timestamps(recognizer, tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=12)
    opened: list[object] = []

    def fake_camera(index):
        opened.append(index)
        return cv2.VideoCapture(str(video))  # a camera that films the clip

    out = tmp_path / "out"
    summary = run(PredictConfig(input="webcam:0", output=str(out), max_frames=6, progress=False),
                  recognizer=recognizer, capture_factory=fake_camera)
    records = _records(out)
    assert opened == [0]
    assert {r["source"] for r in records} == {"webcam:0"} and sorted({r["frame"] for r in records}) == list(range(6))
    times = [r["time_s"] for r in records]
    assert times == sorted(times) and times[0] >= 0
    assert summary["kind"] == "webcam" and (out / "annotated" / "webcam_0.mp4").is_file()
    faces = [r for r in records if r["label"] is not None]
    assert faces and all(isinstance(r["track_id"], int) and r["smoothed_label"] for r in faces)  # webcams track too
    assert summary["tracks"] and (out / "timeline.png").is_file()


def test_webcam_interrupt_keeps_what_was_written(recognizer, tmp_path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=12)

    class InterruptedCamera:
        def __init__(self, index):
            self.capture = cv2.VideoCapture(str(video))
            self.grabs = 0

        def __getattr__(self, name):
            return getattr(self.capture, name)

        def grab(self):
            self.grabs += 1
            if self.grabs == 4:
                raise KeyboardInterrupt  # what Ctrl+C does mid-stream
            return self.capture.grab()

    out = tmp_path / "out"
    summary = run(PredictConfig(input="webcam:1", output=str(out), progress=False), recognizer=recognizer,
                  capture_factory=InterruptedCamera)
    assert summary["interrupted"] and summary["frames"] == 3
    assert sorted({r["frame"] for r in _records(out)}) == [0, 1, 2]
    assert sum(t["frames"] for t in summary["tracks"]) >= 3  # the timeline covers what was written


def test_cli_missing_webcam_fails_clearly(tmp_path) -> None:
    result = _cli("input=webcam:7", f"output={tmp_path / 'out'}", "detector=haar")
    assert result.returncode == EXIT_BAD_INPUT
    assert "cannot open webcam 7" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jpg", None, "input not found"),
    ("broken.jpg", b"not an image", "cannot decode image"),
    ("clip.mp4", b"not a video", "cannot open video"),
    ("notes.txt", b"hello", "cannot tell what"),
])
def test_cli_bad_single_input_fails_with_a_clear_message(trained_checkpoint, tmp_path, name, content,
                                                         message) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    result = _cli(f"ckpt_path={trained_checkpoint}", f"input={path}", f"output={out}", "detector=haar")
    assert result.returncode == EXIT_BAD_INPUT
    assert message in result.stderr and name in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()  # nothing half-written


def test_cli_arguments_are_checked(tmp_path) -> None:
    assert _cli("--help").returncode == 0 and "every_n_frames" in _cli("--help").stdout
    unknown = _cli("input=x.jpg", "treshold=0.5")
    assert unknown.returncode == EXIT_BAD_INPUT and "treshold" in unknown.stderr
    typed = _cli("input=x.jpg", "every_n_frames=often")
    assert typed.returncode == EXIT_BAD_INPUT and "every_n_frames" in typed.stderr
    assert _cli("x.jpg").returncode == EXIT_BAD_INPUT
    no_input = _cli(f"output={tmp_path}")
    assert no_input.returncode == EXIT_BAD_INPUT and "input=" in no_input.stderr
    missing_ckpt = _cli("ckpt_path=nowhere.ckpt", f"input={tmp_path}")
    assert missing_ckpt.returncode == EXIT_BAD_INPUT and "nowhere.ckpt" in missing_ckpt.stderr


def test_parse_args_types_values() -> None:
    cfg = parse_args(["input=a.mp4", "fps=7.5", "largest_only=true", "max_frames=10"])
    assert cfg.fps == 7.5 and cfg.largest_only is True and cfg.max_frames == 10 and cfg.detector == "auto"


def test_cli_with_yunet_and_face_crop_inputs(trained_checkpoint, tmp_path) -> None:
    model = yunet_model_file()
    if model is None:
        pytest.skip(f"{YUNET_ENV} is not set")
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), face_photo())
    out = tmp_path / "yunet"
    result = _cli(f"ckpt_path={trained_checkpoint}", f"input={photo}", f"output={out}", "detector=yunet",
                  env={YUNET_ENV: model})
    assert result.returncode == 0, result.stderr
    (record,) = _records(out)
    assert record["score"] > 0.6
    crops = tmp_path / "crops"
    crops.mkdir()
    cv2.imwrite(str(crops / "face.png"), cv2.cvtColor(face_photo()[40:190, 150:300], cv2.COLOR_BGR2GRAY))
    result = _cli(f"ckpt_path={trained_checkpoint}", f"input={crops}", f"output={tmp_path / 'crops_out'}",
                  "face_crop=true")
    assert result.returncode == 0, result.stderr
    (record,) = _records(tmp_path / "crops_out")
    assert record["box"] == [0, 0, 150, 150] and record["score"] == 1.0
