"""The `electra-pretrain` command: pretraining, fine-tuning and their tools.

`electra-pretrain train <overrides>` is `python train.py <overrides>` from any directory (the configs ship in the
package) and `electra-pretrain finetune <overrides>` is `python finetune.py <overrides>`: every argument after the
command goes to Hydra as it is (`-m`, `--cfg job`, `--help` included). Each other subcommand is defined in the
module of its wing (pretrain_commands, finetune_commands, tool_commands) and imports what it needs only when it
runs, so `--help` answers without loading torch.
"""

from __future__ import annotations

import argparse
import sys

from electra_pretrain.cli import finetune_commands, pretrain_commands, tool_commands

HYDRA_APPS = {
    "train": "pretrain: the same as `python train.py <overrides>` (Hydra; --help lists the options)",
    "finetune": "fine-tune: the same as `python finetune.py <overrides>` (Hydra; --help lists the options)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="electra-pretrain", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in HYDRA_APPS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for module in (pretrain_commands, finetune_commands, tool_commands):
        module.add_commands(sub)
    return parser


def run_hydra_app(name: str, overrides: list[str]) -> None:
    """Hand every argument to the Hydra app, as `python train.py` / `python finetune.py` would see them."""
    sys.argv = [f"{sys.argv[0]} {name}", *overrides]
    if name == "train":
        from electra_pretrain.pretrain.app import main as app_main
    else:
        from electra_pretrain.finetune.app import main as app_main
    app_main()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("electra-pretrain")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in HYDRA_APPS:
        run_hydra_app(argv[0], argv[1:])
        return
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as error:
        from electra_pretrain.failures import known_failure

        known = known_failure(error)
        if known is None and not isinstance(error, (ValueError, OSError)):
            raise
        print(f"error: {known or error}", file=sys.stderr)
        sys.exit(1)
