"""Options shared by subcommands of both wings."""

from __future__ import annotations

import argparse


def add_no_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="read files whose checksums do not match (damaged or changed) anyway",
    )
