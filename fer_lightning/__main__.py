"""`python -m fer_lightning [overrides]`: training; the command is `fer_lightning.cli.train` (also `fer-train`)."""

from fer_lightning.cli.train import main

if __name__ == "__main__":
    main()
