"""`python -m fer_lightning.app`: the command is `fer_lightning.cli.app` (also `fer-app`); the page is built by
`fer_lightning.webapp`."""

from fer_lightning.cli.app import console_main

if __name__ == "__main__":
    console_main()
