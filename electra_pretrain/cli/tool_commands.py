"""Subcommands of the tools over both wings: benchmarks against peers and corpus preparation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from electra_pretrain.cli.options import add_document_boundary
from electra_pretrain.cli.pretrain_commands import resolve_device
from electra_pretrain.config_base import MIXED_PRECISIONS
from electra_pretrain.model_config import PRESETS
from electra_pretrain.pretrain.config import COMPILE_MODES
from electra_pretrain.tools.study import DEFAULT_LABELS, DEFAULT_LRS, FULL_LABELS


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_bench(sub)
    add_spam_corpus(sub)
    add_study(sub)
    add_sotu_eras(sub)


def add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="time training steps (ours vs a transformers peer), or the data pipeline")
    bench_sub = bench.add_subparsers(dest="target")
    data = bench_sub.add_parser("data", help="tokens/s of the example pipeline")
    data.add_argument("files", nargs="+", help="files, globs or directories")
    add_document_boundary(data)
    data.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one on the files)")
    data.add_argument("--vocab-size", type=int, default=30522, help="when a tokenizer is trained (no --tokenizer)")
    data.add_argument("--seq-len", type=int, default=128, help="tokens per example")
    data.add_argument("--examples", type=int, default=20000, help="examples to build and time")
    data.add_argument("--workers", default="0,1,2", help="dataloader worker counts to time, comma-separated")
    data.add_argument(
        "--prepared", default=None, help="a prepared folder of the same files (default: prepare one here, timed)"
    )
    data.add_argument("--json", action="store_true", help="print one JSON object")
    data.set_defaults(func=bench_data_command)
    vocabulary = bench_sub.add_parser(
        "tokenizer", help="our WordPiece trainer vs tokenizers' WordPieceTrainer: CPU time and peak memory"
    )
    vocabulary.add_argument("files", nargs="+", help="files, globs or directories of text")
    add_document_boundary(vocabulary, help="a blank line ends a document, or one document per line")
    vocabulary.add_argument("--vocab-size", type=int, default=30522, help="tokens to learn")
    vocabulary.add_argument("--json", action="store_true", help="print one JSON object")
    vocabulary.set_defaults(func=bench_tokenizer_command)
    tune = bench_sub.add_parser(
        "finetune",
        help="our fine-tuning loop vs a transformers-built one: accuracy and "
        "examples/s on the same data (layer-wise decay off)",
    )
    tune.add_argument("model", help="an export folder or a transformers ELECTRA discriminator folder")
    tune.add_argument("--train", default="data/spam/train.csv", help="training file in the task's layout")
    tune.add_argument("--validation", default="data/spam/validation.csv", help="validation file in the task's layout")
    tune.add_argument("--seeds", default="0,1,2", help="comma-separated; accuracy is averaged over them")
    tune.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    tune.add_argument("--lr", type=float, default=3e-4, help="finetune.py's default for models up to width 256")
    tune.add_argument("--batch-size", type=int, default=32, help="examples per optimizer step")
    tune.add_argument("--max-length", type=int, default=128, help="tokens per example, at most")
    tune.add_argument(
        "--task",
        nargs="+",
        default=["task=classification"],
        help="finetune.py overrides naming the task, e.g. task=squad (kinds: classification, question_answering)",
    )
    tune.add_argument("--json", action="store_true", help="print one JSON object")
    tune.set_defaults(func=bench_finetune_command)
    bench.add_argument("--model", default="small", choices=sorted(PRESETS), help="model preset to time")
    bench.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    bench.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    bench.add_argument(
        "--vocab-size",
        type=int,
        default=30522,
        help="our model's vocabulary (e.g. a run tokenizer's, to compare with train.py)",
    )
    bench.add_argument(
        "--precision",
        default="auto",
        choices=MIXED_PRECISIONS,
        help="accelerate mixed precision (auto: bf16 on a GPU that has it, else fp32; as the trainer)",
    )
    bench.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to time (auto: cuda when available)"
    )
    bench.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    bench.add_argument("--compile", action="store_true", help="torch.compile the step")
    bench.add_argument(
        "--compile-mode", default="default", choices=COMPILE_MODES, help="torch.compile mode (trainer.compile_mode)"
    )
    bench.add_argument(
        "--no-reference", dest="reference", action="store_false", help="skip the transformers-built peer"
    )
    bench.add_argument(
        "--ablation",
        action="store_true",
        help="time the fast path one change at a time, from a naive step (no reference)",
    )
    bench.add_argument(
        "--default-malloc",
        dest="keep_freed_memory",
        action="store_false",
        help="CPU: leave glibc's allocator as it is in every worker (trainer.keep_freed_memory=false)",
    )
    bench.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="peak FLOP/s for MFU (default: measured on CPU, data sheet on GPU)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> None:
    args.device = resolve_device(args.device)
    if args.precision == "auto":
        import torch

        args.precision = "bf16" if args.device == "cuda" and torch.cuda.is_bf16_supported() else "no"
    from electra_pretrain.tools.bench import bench_ablation, bench_model

    if args.ablation:
        print_ablation(args, bench_ablation(args))
        return
    result = bench_model(args)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.model} seq {args.seq_len} batch {args.batch_size} {args.precision} on {args.device}"
        f"{'' if args.device != 'cpu' else ', freed memory kept' if args.keep_freed_memory else ', glibc default'}"
    )
    print(
        f"  ours:      {result['step_time_s'] * 1e3:8.1f} ms/step  {result['tokens_per_s']:10.0f} tok/s  "
        f"MFU {result['mfu']:.1%}  peak mem {result['peak_mem_bytes'] / 2**20:.0f} MiB"
    )
    print(
        f"  model FLOPs per token {result['flops_per_token'] / 1e6:.1f} M; peak {result['peak_flops'] / 1e12:.2f} "
        f"TFLOP/s ({result['peak_flops_source']})"
    )
    if "reference" in result:
        ref = result["reference"]
        print(
            f"  reference ({ref['kind']}): {ref['step_time_s'] * 1e3:8.1f} ms/step  {ref['tokens_per_s']:10.0f} "
            f"tok/s  peak mem {ref['peak_mem_bytes'] / 2**20:.0f} MiB"
        )
        print(
            f"  speed-up x{result['speedup_vs_reference']:.2f}, memory ratio {result['memory_ratio_vs_reference']:.2f}"
        )


def print_ablation(args: argparse.Namespace, rows: list[dict]) -> None:
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.model} seq {args.seq_len} batch {args.batch_size} on {args.device}: each row adds one change")
    print(f"{'change':<100} {'ms/step':>8} {'tok/s':>8} {'vs above':>8} {'vs naive':>8} {'peak MiB':>8}")
    previous = rows[0]
    for row in rows:
        print(
            f"{row['change']:<100} {row['step_time_s'] * 1e3:8.0f} {row['tokens_per_s']:8.0f} "
            f"{row['tokens_per_s'] / previous['tokens_per_s']:7.2f}x {row['tokens_per_s'] / rows[0]['tokens_per_s']:7.2f}x "
            f"{row['peak_mem_bytes'] / 2**20:8.0f}"
        )
        if not row["probe"]:
            previous = row


def bench_data_command(args: argparse.Namespace) -> None:
    from electra_pretrain.tools.bench_data import bench_data as run

    workers = [int(w) for w in args.workers.split(",")]
    result = run(
        args.files,
        args.document_boundary,
        args.tokenizer,
        args.vocab_size,
        args.seq_len,
        args.examples,
        workers,
        prepared=args.prepared,
    )
    if args.json:
        print(json.dumps(result))
        return
    for row in result["rows"]:
        print(
            f"data, {row['num_workers']} worker(s): on the fly {row['on_the_fly_tokens_per_s'] / 1e6:.2f} M tokens/s, "
            f"prepared {row['prepared_tokens_per_s'] / 1e6:.2f} M tokens/s per process (x{row['ratio']:.0f}; "
            f"{row['examples']} examples)"
        )
    for read in result["reads"]:
        by_file = read["by_file_bytes_per_slot"]
        print(
            f"read per slot and epoch at {read['slots']} slot(s): on the fly by document "
            f"{read['by_document_bytes_per_slot'] / 1e6:.1f} MB, by file "
            f"{'- (fewer files than slots)' if by_file is None else f'{by_file / 1e6:.2f} MB'}, prepared "
            f"{read['prepared_bytes_per_slot'] / 1e6:.2f} MB"
        )
    if result["prepare"]:
        print(f"prepare: {result['prepare']['tokens_per_s_per_core'] / 1e6:.2f} M tokens/s on one core")
    for preset, need in result["projection"].items():
        print(
            f"8 H100s training {preset} ({need['tokens_per_s_for_8_gpus'] / 1e6:.1f} M tokens/s): about "
            f"{need['cores_on_the_fly']:.0f} cores tokenizing on the fly, {need['cores_prepared']:.2f} reading "
            "prepared examples"
        )


def bench_finetune_command(args: argparse.Namespace) -> None:
    from electra_pretrain.tools.bench_finetune import bench_finetune as run

    result = run(
        args.model,
        args.train,
        args.validation,
        [int(s) for s in args.seeds.split(",")],
        args.epochs,
        args.lr,
        args.batch_size,
        args.max_length,
        task=args.task,
    )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"fine-tuning {result['model']} ({result['task']}): {result['train_examples']} training features, "
        f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, layer-wise decay off"
    )
    metric = result["metric"]

    def score(value: float | None) -> str:
        return f"{'-':>11}" if value is None else f"{value:11.4f}"

    print(f"{'seed':>4} {'ours ' + metric:>11} {'peer ' + metric:>11} {'ours ex/s':>10} {'peer ex/s':>10}")
    for row in result["per_seed"]:
        print(
            f"{row['seed']:>4} {score(row['ours']['score'])} {score(row['transformers']['score'])} "
            f"{row['ours']['examples_per_s']:10.1f} {row['transformers']['examples_per_s']:10.1f}"
        )
    mean = result["mean"]
    print(
        f"mean {score(mean['ours']['score'])} {score(mean['transformers']['score'])} "
        f"{mean['ours']['examples_per_s']:10.1f} {mean['transformers']['examples_per_s']:10.1f}"
    )
    difference = result["score_difference"]
    compared = "" if difference is None else f"{metric} difference {difference:+.4f}; "
    print(f"{compared}throughput x{result['throughput_ratio']:.2f} of the transformers loop")


def add_spam_corpus(sub: argparse._SubParsersAction) -> None:
    spam = sub.add_parser("spam-corpus", help="the SpamAssassin npm package's messages as train/validation/test csv")
    spam.add_argument("package_data", type=Path, help="the unpacked package's data/ folder")
    spam.add_argument("--out", type=Path, default=Path("data/spam"), help="folder for the csv files")
    spam.set_defaults(func=spam_corpus_command)


def spam_corpus_command(args: argparse.Namespace) -> None:
    from electra_pretrain.tools.spam_corpus import write_splits

    for split, counts in write_splits(args.package_data, args.out).items():
        print(f"{args.out / split}.csv: {counts['ham']} ham, {counts['spam']} spam")


def bench_tokenizer_command(args: argparse.Namespace) -> None:
    from electra_pretrain.tools.bench_tokenizer import bench_tokenizer

    report = bench_tokenizer(args.files, args.document_boundary, args.vocab_size)
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['megabytes']:.1f} MB of text, {report['vocab_size']} tokens")
    for row in report["rows"]:
        print(
            f"  {row['trainer']:<10} {row['cpu_s']:7.2f} CPU-s {row['wall_s']:7.2f} s "
            f"{row['peak_rss_mb']:7.0f} MB peak RSS ({row['tokens']} tokens)"
        )
    print(f"  ours / tokenizers: CPU time {report['cpu_ratio']:.2f}x, peak memory {report['memory_ratio']:.2f}x")


def add_study(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser(
        "study",
        help="label efficiency: RTD and masked-LM pretraining at equal FLOPs and random "
        "weights, fine-tuned at several label counts (tools/study.py)",
    )
    study.add_argument("out", type=Path, help="the study's folder (rerun to resume)")
    study.add_argument("task", nargs="+", help="finetune.py overrides naming the task and its files, e.g. task=spam")
    study.add_argument(
        "--text",
        nargs="+",
        default=[],
        help="unlabeled text files to pretrain on (default: the task's training split, labels dropped)",
    )
    study.add_argument(
        "--pretrain",
        nargs="+",
        default=["experiment=cpu_domain"],
        help="train.py overrides of both pretraining runs (default: experiment=cpu_domain)",
    )
    study.add_argument("--finetune", nargs="+", default=[], help="more finetune.py overrides for every run")
    study.add_argument(
        "--labels",
        default=",".join(DEFAULT_LABELS),
        help="label counts, comma-separated; 'all' for the whole training split",
    )
    study.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds, comma-separated")
    study.add_argument(
        "--lrs",
        default=",".join(f"{lr:g}" for lr in DEFAULT_LRS),
        help="learning rates searched for every start and count, chosen on validation (default: %(default)s)",
    )
    study.add_argument("--search-seeds", type=int, default=1, help="seeds the lr search runs on (the first ones)")
    study.add_argument("--starts", default="rtd,mlm,random", help="which starts: rtd, mlm, random")
    study.add_argument(
        "--full", action="store_true", help="the full grid: 50,100,300,1000,all labels, the lr search on every seed"
    )
    study.set_defaults(func=study_command)


def study_command(args: argparse.Namespace) -> None:
    from electra_pretrain.tools.study import StudyConfig, run_study

    seeds = tuple(int(s) for s in args.seeds.split(","))
    config = StudyConfig(
        out=args.out,
        task_overrides=args.task,
        text=args.text,
        pretrain_overrides=args.pretrain,
        finetune_overrides=args.finetune,
        starts=tuple(args.starts.split(",")),
        labels=FULL_LABELS if args.full else tuple(args.labels.split(",")),
        seeds=seeds,
        lrs=tuple(float(lr) for lr in args.lrs.split(",")),
        search_seeds=len(seeds) if args.full else args.search_seeds,
    )
    report = run_study(config)
    print((args.out / "study.md").read_text(), end="")
    print(
        f"wrote {args.out / 'study.json'}, {args.out / 'study.md'}, {args.out / 'study.png'} "
        f"({report['task']}, {report['metric']})"
    )


def add_sotu_eras(sub: argparse._SubParsersAction) -> None:
    eras = sub.add_parser(
        "sotu-eras",
        help="State of the Union passages labelled by era, as train/validation/test csv (a second task for the study)",
    )
    eras.add_argument("sotu", type=Path, help="the addresses (make data: data/sotu)")
    eras.add_argument("--out", type=Path, default=Path("data/sotu_eras"), help="folder for the csv files")
    eras.set_defaults(func=sotu_eras_command)


def sotu_eras_command(args: argparse.Namespace) -> None:
    from electra_pretrain.tools.sotu_corpus import write_era_splits

    for split, counts in write_era_splits(args.sotu, args.out).items():
        print(f"{args.out / split}.csv: " + ", ".join(f"{era} {n}" for era, n in counts.items()))
