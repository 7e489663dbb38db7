"""`python -m fer_lightning.report`: the command is `fer_lightning.cli.report` (also `fer-report`); the library is
`fer_lightning.reporting`."""

from fer_lightning.cli.report import main

if __name__ == "__main__":
    main()
