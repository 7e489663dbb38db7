"""`fer-report` / `python -m fer_lightning.report MULTIRUN_DIR [--out DIR]`: one comparison (report.md + PNGs)
from a sweep's run folders, through `fer_lightning.reporting`.

A folder is the only argument, so plain argparse: no config tree to compose.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_lightning.cli.common import EXIT_USER_ERROR, print_user_error
from fer_lightning.reporting import collect_runs, markdown_table, summarize, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_lightning.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dir", type=Path, help="a Hydra multirun dir (or a folder of several)")
    parser.add_argument("--out", type=Path, default=None, help="where report.md goes (default: MULTIRUN_DIR)")
    args = parser.parse_args(argv)
    try:
        runs, failed = collect_runs(args.multirun_dir)
    except FileNotFoundError as err:
        print_user_error(err)
        raise SystemExit(EXIT_USER_ERROR) from None
    if not runs:
        jobs = "".join(f"\n  failed job: {job.dir}" for job in failed)
        print(f"error: no metrics.json found under {args.multirun_dir}{jobs}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    print(write_report(runs, failed, args.out or args.multirun_dir))
    print(markdown_table(summarize(runs)))
    if failed:
        print(f"{len(failed)} failed job(s), listed in report.md")


if __name__ == "__main__":
    main()
