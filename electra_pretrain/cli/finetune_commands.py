"""Subcommands over the fine-tuning wing (the fine-tuning run itself is `electra-pretrain finetune`)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """None yet beside `finetune` (cli/__init__.py hands that to Hydra)."""
