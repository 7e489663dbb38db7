"""`python -m fer_lightning.evaluate`: the command is `fer_lightning.cli.evaluate` (also `fer-evaluate`); the
library is `fer_lightning.evaluation`."""

from fer_lightning.cli.evaluate import main

if __name__ == "__main__":
    main()
