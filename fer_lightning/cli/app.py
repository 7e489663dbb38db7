"""`fer-app` / `python -m fer_lightning.app [key=value ...]`: the emotion finder as a page in your browser.

Serves http://127.0.0.1:7860 (this machine only) with three tabs: a photo, a video, the webcam. Keys are the
fields of `fer_lightning.webapp.AppSettings` (``--help`` lists them): the model (`ckpt_path=`, a .ckpt or .onnx;
default the shipped one) and detector are chosen here, once; `host=0.0.0.0` serves the local network, `share=true`
asks Gradio for a public link; `max_upload_mb` and `max_video_s` cap what visitors can send. Needs the optional
extra: pip install "fer_lightning[app]".
"""

from __future__ import annotations

import sys

from fer_lightning.cli.common import key_value_usage, parse_key_values, print_user_error, show_tracebacks, wants_help
from fer_lightning.errors import FERLightningError
from fer_lightning.webapp import LOCALHOST, AppSettings, EmotionApp

USAGE = key_value_usage(__doc__, AppSettings)


def build_app(settings: AppSettings) -> EmotionApp:
    from fer_lightning.inference.recognizer import EmotionRecognizer

    recognizer = EmotionRecognizer.from_checkpoint(settings.ckpt_path, detector=settings.detector)
    return EmotionApp(recognizer, settings)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(USAGE)
        return 0
    try:
        settings = parse_key_values(AppSettings, argv)
        try:
            import gradio  # noqa: F401
        except ImportError:
            raise FERLightningError('the browser app needs Gradio: pip install "fer_lightning[app]"') from None
        app = build_app(settings)
    except (FERLightningError, ValueError, FileNotFoundError, TypeError) as err:
        if show_tracebacks():
            raise
        print_user_error(err)
        return 2
    if settings.host != LOCALHOST:
        print(f"warning: serving on {settings.host}: anyone who can reach this machine on port {settings.port} can "
              "use the app", file=sys.stderr)
    app.launch()
    return 0


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
