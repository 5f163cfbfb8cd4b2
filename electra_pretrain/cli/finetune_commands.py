"""Subcommands over the fine-tuning wing (the fine-tuning run itself is `electra-pretrain finetune`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from electra_pretrain.cli.options import add_no_verify
from electra_pretrain.config_base import MIXED_PRECISIONS


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_predict(sub)


def add_predict(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser("predict", help="run a fine-tuned model (a run's output_dir/model) on new files")
    predict.add_argument("model_dir", type=Path, help="the fine-tuned model folder (it holds task.yaml)")
    predict.add_argument("files", nargs="+", help="files or globs in the layout the model was fine-tuned on")
    predict.add_argument("--out", type=Path, default=None, help="the jsonl to write (default: standard output)")
    predict.add_argument("--batch-size", type=int, default=64, help="examples per forward pass")
    predict.add_argument(
        "--precision", default="auto", choices=MIXED_PRECISIONS, help="auto: bf16 on a GPU that has it, else fp32"
    )
    predict.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (auto: cuda when available)"
    )
    add_no_verify(predict)
    predict.set_defaults(func=predict_command)


def predict_command(args: argparse.Namespace) -> None:
    import sys

    from electra_pretrain.finetune.predict import predict_files, write_prediction_rows

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    rows = predict_files(args.model_dir, args.files, args.batch_size, args.precision, args.device, args.verify)
    count = write_prediction_rows(rows, args.out)
    if args.out:
        print(f"wrote {count} predictions to {args.out}", file=sys.stderr)
