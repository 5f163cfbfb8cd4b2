"""Options shared by subcommands of both wings."""

from __future__ import annotations

import argparse

from electra_pretrain.pretrain.config import DOCUMENT_BOUNDARIES


def add_no_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="read files whose checksums do not match (damaged or changed) anyway",
    )


def add_document_boundary(parser: argparse.ArgumentParser, default: str | None = "blank_line", help: str = "") -> None:
    parser.add_argument(
        "--document-boundary",
        default=default,
        choices=DOCUMENT_BOUNDARIES,
        help=help or "text files: a blank line ends a document, or one document per line",
    )
