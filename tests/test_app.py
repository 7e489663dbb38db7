"""The browser demo (`python -m fer_lightning.app`, fer_lightning/webapp.py): its handlers, its safe defaults, and
the page itself driven in a real headless Chromium (Debian's chromium + chromedriver, through Selenium)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import face_photo, make_face_video

from fer_lightning.inference.recognizer import EmotionRecognizer
from fer_lightning.webapp import LOCALHOST, AppInputError, AppSettings, EmotionApp, video_seconds

gradio = pytest.importorskip("gradio", reason='the app is an optional extra: pip install "fer_lightning[app]"')


@pytest.fixture(scope="module")
def app() -> EmotionApp:
    return EmotionApp(EmotionRecognizer.from_checkpoint(detector="yunet"), AppSettings(max_video_s=5.0))


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --- Handlers, without a browser -------------------------------------------------------------------------------


def test_a_photo_gets_the_same_faces_and_probabilities_as_the_python_api(app: EmotionApp) -> None:
    annotated, rows, text = app.analyze_photo(_rgb(face_photo()))
    (face,) = app.recognizer.predict(face_photo())
    assert annotated.shape == (512, 512, 3) and not np.array_equal(annotated, _rgb(face_photo()))
    assert rows == [[1, *face.box, face.label, *(round(100 * face.probs[n], 1) for n in app.recognizer.class_names)]]
    assert text == f"1 face(s): face 1: {face.label} ({face.confidence:.0%})."
    _, rows, text = app.analyze_photo(np.full((240, 320, 3), 120, np.uint8))
    assert rows == [] and text == "No face found."
    with pytest.raises(AppInputError, match="no photo"):
        app.analyze_photo(None)


def test_a_video_gets_a_browser_playable_annotated_copy_a_timeline_and_its_tracks(app: EmotionApp,
                                                                                 tmp_path: Path) -> None:
    video = make_face_video(tmp_path / "clip.mp4", frames=24, fps=12.0)
    annotated, timeline, rows, text = app.analyze_video(str(video))
    assert annotated.endswith(".webm")
    playback = cv2.VideoCapture(annotated)
    decoded = 0
    while playback.read()[0]:
        decoded += 1
    assert decoded == 24
    assert timeline and Path(timeline).stat().st_size > 10_000
    assert len(rows) == 1 and rows[0][0] == 1 and rows[0][3] == 24  # one track over all 24 frames
    assert text.startswith("24 frames in ") and "1 face track(s)" in text


def test_a_video_over_the_length_limit_is_refused_before_it_is_read(app: EmotionApp, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    video = make_face_video(tmp_path / "long.mp4", frames=36, fps=6.0)  # 6 s, the fixture's limit is 5 s
    assert video_seconds(video) == pytest.approx(6.0)
    import fer_lightning.webapp as webapp

    monkeypatch.setattr(webapp, "run", lambda *a, **k: pytest.fail("the video must not be processed"))
    with pytest.raises(AppInputError, match=r"the video is 6 s long; this app takes videos up to 5 s"):
        app.analyze_video(str(video))
    (tmp_path / "notavideo.mp4").write_bytes(b"not a video")
    with pytest.raises(AppInputError, match="notavideo.mp4"):
        app.analyze_video(str(tmp_path / "notavideo.mp4"))


def test_webcam_frames_keep_their_track_in_the_visitors_session(app: EmotionApp) -> None:
    frame = _rgb(face_photo())
    first, rows, state = app.webcam_frame(frame, None)
    second, rows_again, state_again = app.webcam_frame(frame, state)
    assert state_again is state and first.shape == frame.shape
    assert len(rows) == len(rows_again) == 1
    assert state["tracker"].tracker.next_id == 2  # one track, seen twice
    _, _, other_visitor = app.webcam_frame(frame, None)
    assert other_visitor is not state


# --- Safe by default -------------------------------------------------------------------------------------------


def test_it_listens_on_localhost_without_a_share_link_and_caps_uploads(app: EmotionApp,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    captured = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: captured.update(kwargs))
    EmotionApp(app.recognizer, AppSettings()).launch()
    assert captured["server_name"] == LOCALHOST == "127.0.0.1" and captured["share"] is False
    assert captured["max_file_size"] == "25mb"


def test_no_field_of_the_page_takes_a_path_or_text(app: EmotionApp) -> None:
    """Visitors can only upload files; the model was chosen when the app started."""
    page = app.build()
    kinds = {type(block).__name__ for block in page.blocks.values()}
    assert not kinds & {"Textbox", "File", "FileExplorer", "Dropdown", "Code", "UploadButton"}, kinds
    assert {"Image", "Video", "Button", "Dataframe"} <= kinds


@pytest.mark.parametrize(("args", "message"), [
    (["port=99999"], "port must be in 1..65535"),
    (["max_video_s=0"], "must be > 0"),
    (["max_upload=5"], "did you mean 'max_upload_mb'"),
])
def test_the_command_refuses_bad_settings_in_one_line(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fer_lightning.app", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- The page in a real browser --------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
requires_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="no Chromium and chromedriver here (Debian: apt-get install chromium "
                                            "chromium-driver; .ci/run installs them where it can)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m fer_lightning.app` as a user starts it, on a free port, with a 1 MB upload cap."""
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "fer_lightning.app", f"port={port}", "max_upload_mb=1"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://{LOCALHOST}:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_upload_over_the_cap_is_refused_by_the_server(served: str) -> None:
    boundary = "fer-lightning-test"
    payload = os.urandom(2 * 1024 * 1024)  # 2 MB against the 1 MB cap
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(served + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413


@requires_browser
def test_the_page_in_a_headless_browser_shows_the_emotion_of_an_uploaded_photo(served: str,
                                                                              tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), face_photo())
    (expected,) = EmotionRecognizer.from_checkpoint(detector="yunet").predict(cv2.imread(str(photo)))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1300"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.get(served)
        WebDriverWait(browser, 60).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "#photo-input input[type=file]"))
        assert "Emotion finder" in browser.find_element(By.TAG_NAME, "h2").text
        browser.find_element(By.CSS_SELECTOR, "#photo-input input[type=file]").send_keys(str(photo))
        WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#photo-input img"))
        browser.find_element(By.ID, "photo-button").click()
        WebDriverWait(browser, 120).until(lambda b: "face" in b.find_element(By.ID, "photo-summary").text)
        summary = browser.find_element(By.ID, "photo-summary").text
        table = [cell.strip() for cell in browser.find_element(By.ID, "photo-faces").text.splitlines()]
        browser.save_screenshot(str(tmp_path / "page.png"))
    finally:
        browser.quit()
    assert summary == f"1 face(s): face 1: {expected.label} ({expected.confidence:.0%})."
    row = table[table.index("neutral %") + 1:]  # the headers, then the one face's row
    assert row[:6] == ["1", *map(str, expected.box), expected.label]
    assert float(row[6 + 3]) == pytest.approx(round(100 * expected.probs["happy"], 1))
    screenshot = cv2.imread(str(tmp_path / "page.png"))
    assert screenshot.shape[1] == 1280 and screenshot.shape[0] > 800 and screenshot.std() > 20
    if os.environ.get("FER_LIGHTNING_SCREENSHOTS"):  # keep it for a person to look at
        shutil.copy(tmp_path / "page.png", Path(os.environ["FER_LIGHTNING_SCREENSHOTS"]) / "app_photo.png")
