"""`python -m fer_lightning.export`: the command is `fer_lightning.cli.export` (also `fer-export`); the library is
`fer_lightning.inference.export`."""

from fer_lightning.cli.export import console_main

if __name__ == "__main__":
    console_main()
