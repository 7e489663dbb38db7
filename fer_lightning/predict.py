"""`python -m fer_lightning.predict`: the command is `fer_lightning.cli.predict` (also `fer-predict`); the library
is `fer_lightning.inference.pipeline`."""

from fer_lightning.cli.predict import console_main

if __name__ == "__main__":
    console_main()
