"""Subcommands over the pretraining wing: tokenizer train, export, detect, evaluate, plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from electra_pretrain.cli.options import add_document_boundary, add_no_verify
from electra_pretrain.pretrain.config import DATA_FORMATS
from electra_pretrain.pretrain.plot import X_AXES


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_tokenizer(sub)
    add_prepare(sub)
    add_export(sub)
    add_detect(sub)
    add_evaluate(sub)
    add_plot(sub)


def add_tokenizer(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser("tokenizer", help="tokenizer tools").add_subparsers(dest="action", required=True)
    train = tok.add_parser("train", help="train a WordPiece tokenizer on text files")
    train.add_argument("files", nargs="+", help="files, globs or directories")
    train.add_argument("--vocab-size", type=int, default=30522, help="tokens in the vocabulary (default 30522)")
    train.add_argument("--out", required=True, help="the folder to write the tokenizer files to")
    train.add_argument("--cased", action="store_true", help="keep case and accents (default: uncased)")
    add_document_boundary(train)
    train.add_argument("--text-field", default="text", help="json / parquet / csv: the field holding the text")
    train.set_defaults(func=tokenizer_train_command)


def tokenizer_train_command(args: argparse.Namespace) -> None:
    from electra_pretrain.pretrain.config import SourceSpec
    from electra_pretrain.pretrain.sources import READ_STATS, documents
    from electra_pretrain.tokenizer import save_tokenizer, train_tokenizer

    spec = SourceSpec(files=args.files, document_boundary=args.document_boundary, text_field=args.text_field)
    texts = (row["text"] for row in documents([spec], seed=0, shuffle_files=False))
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab_size, lowercase=not args.cased)
    save_tokenizer(tokenizer, args.out)
    if READ_STATS:
        print(f"data: skipped or repaired {dict(READ_STATS)} (the warnings above name the files)")
    print(f"saved a {tokenizer.get_vocab_size()}-token WordPiece tokenizer to {args.out}")


def add_prepare(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser(
        "prepare",
        help="build the training examples once, in parallel, into memory-mapped shards (train with data=prepared)",
    )
    prepare.add_argument("files", nargs="*", help="files, globs or directories (or --hub)")
    prepare.add_argument("--tokenizer", required=True, help="the run's tokenizer: a folder or a vocab.txt")
    prepare.add_argument("--out", required=True, type=Path, help="the folder to write (replaced whole when done)")
    prepare.add_argument("--max-seq-length", type=int, default=128, help="tokens per example (data.max_seq_length)")
    prepare.add_argument(
        "--num-proc", type=int, default=None, help="processes building shards (default: the CPUs this process may use)"
    )
    prepare.add_argument("--shards", type=int, default=16, help="shards (the output does not depend on --num-proc)")
    prepare.add_argument(
        "--held-out-share",
        type=float,
        default=0.0,
        help="documents held out by text hash, kept as held_out.jsonl (the run's data.eval_share)",
    )
    prepare.add_argument("--seed", type=int, default=0, help="seeds the builders (random lengths, segment splits)")
    add_document_boundary(prepare)
    prepare.add_argument("--format", default="auto", choices=DATA_FORMATS, help="the files' format")
    prepare.add_argument("--text-field", default="text", help="json / parquet / csv: the field holding the text")
    prepare.add_argument("--hub", default=None, help="a hub dataset name instead of files (needs network)")
    prepare.add_argument("--hub-config", default=None, help="the hub dataset's configuration")
    prepare.add_argument("--split", default="train", help="the hub dataset's split")
    prepare.set_defaults(func=prepare_command)


def prepare_command(args: argparse.Namespace) -> None:
    from electra_pretrain.pretrain.config import SourceSpec
    from electra_pretrain.pretrain.prepare import PrepareSettings, prepare
    from electra_pretrain.pretrain.stream import usable_cpus

    if bool(args.files) == bool(args.hub):
        raise ValueError("prepare: give either files or --hub")
    source = SourceSpec(
        files=args.files,
        hub=args.hub,
        hub_config=args.hub_config,
        split=args.split,
        format=args.format,
        text_field=args.text_field,
        document_boundary=args.document_boundary,
    )
    settings = PrepareSettings(
        sources=[source],
        tokenizer=args.tokenizer,
        out=str(args.out),
        max_seq_length=args.max_seq_length,
        held_out_share=args.held_out_share,
        seed=args.seed,
        shards=args.shards,
        num_proc=args.num_proc or usable_cpus(),
    )
    manifest = prepare(settings)
    rate = manifest["tokens"] / max(manifest["seconds"], 1e-9)
    print(
        f"prepared {manifest['examples']} examples ({manifest['tokens']} tokens) from {manifest['documents']} "
        f"documents in {len(manifest['shards'])} shards -> {args.out} ({manifest['seconds']:.1f} s, "
        f"{rate:,.0f} tokens/s with {manifest['processes']} processes)"
    )
    if manifest["held_out_documents"]:
        print(f"held out {manifest['held_out_documents']} documents -> {args.out / 'held_out.jsonl'}")
    if manifest["read"]:
        print(f"data: skipped or repaired {manifest['read']} (the warnings above name the files)")
    print(f"train with: python train.py data=prepared data.path={args.out} ...")


def add_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="export a resume checkpoint as discriminator/ and generator/")
    export.add_argument("checkpoint", help="output_dir/checkpoints/step_<N>")
    export.add_argument("--out", required=True, help="the folder to write discriminator/ and generator/ to")
    add_no_verify(export)
    export.set_defaults(func=export_command)


def export_command(args: argparse.Namespace) -> None:
    from electra_pretrain.pretrain.export import export_checkpoint

    folders = export_checkpoint(args.checkpoint, args.out, verify=args.verify)
    print(f"exported {' and '.join(str(folder) for folder in folders)}")


def add_detect(sub: argparse._SubParsersAction) -> None:
    detect = sub.add_parser("detect", help="per-token probability of having been replaced")
    detect.add_argument("model_dir", help="an exported discriminator folder")
    detect.add_argument("sentence", help="the text to score")
    detect.add_argument("--threshold", type=float, default=0.5, help="mark tokens above this probability")
    detect.add_argument(
        "--json",
        action="store_true",
        help='print [{"token": ..., "probability": ..., "replaced": probability > threshold}, ...]',
    )
    add_no_verify(detect)
    detect.set_defaults(func=detect_command)


def detect_command(args: argparse.Namespace) -> None:
    """Print each token of the sentence with the discriminator's probability that it was replaced."""
    from electra_pretrain.pretrain.detect import replaced_probabilities

    rows, windows = replaced_probabilities(args.model_dir, args.sentence, verify=args.verify)
    if args.json:
        print(json.dumps([{**row, "replaced": row["probability"] > args.threshold} for row in rows]))
        return
    if windows > 1:
        print(f"(the text is {len(rows)} tokens: scored in {windows} windows of the model's length)")
    width = max((len(row["token"]) for row in rows), default=0)
    for row in rows:
        flag = "  <- replaced?" if row["probability"] > args.threshold else ""
        print(f"{row['token']:<{width}}  {row['probability']:.3f}{flag}")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("evaluate", help="held-out metrics (MLM, RTD, AUCs) on text files")
    evaluate.add_argument(
        "path",
        help="a run folder (its newest checkpoint), a checkpoint folder, an export folder (discriminator/ + "
        "generator/, or mlm/) or a model folder alone (a discriminator: random_replacement_auc only)",
    )
    evaluate.add_argument("--data", nargs="+", required=True, help="files, globs or directories, as data.files")
    evaluate.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="non-pad tokens to evaluate (default: the run's trainer.eval_tokens, else 65536)",
    )
    evaluate.add_argument(
        "--held-out-share",
        type=float,
        default=0.0,
        help="evaluate only the documents a run with data.eval_share=S held out",
    )
    evaluate.add_argument("--seq-len", type=int, default=None, help="default: the run's data.max_seq_length, else 128")
    add_document_boundary(evaluate, default=None, help="text files (default: the run's, else blank_line)")
    evaluate.add_argument("--format", default=None, choices=DATA_FORMATS, help="default: the run's, else by suffix")
    evaluate.add_argument("--text-field", default=None, help="json / parquet / csv (default: the run's, else text)")
    evaluate.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where to evaluate (auto: cuda when available)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    add_no_verify(evaluate)
    evaluate.set_defaults(func=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> None:
    """Held-out metrics of a checkpoint, an export or a discriminator on text files (pretrain/evaluate.py)."""
    from electra_pretrain.pretrain.evaluate import evaluate_path

    results, seq_len = evaluate_path(
        args.path,
        args.data,
        data_format=args.format,
        text_field=args.text_field,
        document_boundary=args.document_boundary,
        seq_len=args.seq_len,
        max_tokens=args.max_tokens,
        held_out_share=args.held_out_share,
        device=resolve_device(args.device),
        verify=args.verify,
    )
    if args.json:
        print(json.dumps(results))
        return
    print(f"{args.path}: {results['tokens']} held-out tokens, sequences of {seq_len}")
    for name, value in results.items():
        print(f"  {name:<24} {value:.4f}" if isinstance(value, float) else f"  {name:<24} {value}")


def resolve_device(device: str) -> str:
    """auto: cuda when a GPU is available (torch is imported here, when the command runs, not for --help)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_plot(sub: argparse._SubParsersAction) -> None:
    plot = sub.add_parser("plot", help="curves of one or more runs (metrics.jsonl) as a PNG")
    plot.add_argument("run_dirs", nargs="+", help="runs' output_dir folders, overlaid")
    plot.add_argument("--out", default="curves.png", help="the PNG to write")
    plot.add_argument("--x", default="step", choices=X_AXES, help="the horizontal axis")
    plot.set_defaults(func=plot_command)


def plot_command(args: argparse.Namespace) -> None:
    from electra_pretrain.pretrain.plot import plot_runs

    print(f"wrote {plot_runs(args.run_dirs, args.out, args.x)}")
