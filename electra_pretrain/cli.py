"""The `electra-pretrain` command: training, fine-tuning, tokenizer training, export, detection, evaluation, plots,
benchmarks.

`electra-pretrain train <overrides>` is `python train.py <overrides>` from any directory (the configs ship in the
package), `electra-pretrain finetune <overrides>` is `python finetune.py <overrides>`; `accelerate launch train.py
...` starts several processes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from electra_pretrain.config import MIXED_PRECISIONS
from electra_pretrain.modeling import PRESETS
from electra_pretrain.plot import X_AXES
from electra_pretrain.sources import DOCUMENT_BOUNDARIES, FORMATS


def cmd_tokenizer_train(args) -> None:
    from electra_pretrain.sources import SourceSpec, documents
    from electra_pretrain.tokenizer import save_tokenizer, train_tokenizer

    spec = SourceSpec(files=args.files, document_boundary=args.document_boundary, text_field=args.text_field)
    texts = (row["text"] for row in documents([spec], seed=0, shuffle_files=False))
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab_size, lowercase=not args.cased)
    save_tokenizer(tokenizer, args.out)
    print(f"saved a {tokenizer.get_vocab_size()}-token WordPiece tokenizer to {args.out}")


def cmd_export(args) -> None:
    from electra_pretrain.export import export_checkpoint

    export_checkpoint(args.checkpoint, args.out)
    print(f"exported {Path(args.out) / 'discriminator'} (ElectraForPreTraining) and "
          f"{Path(args.out) / 'generator'} (ElectraForMaskedLM)")


def cmd_detect(args) -> None:
    """Print each token of the sentence with the discriminator's probability that it was replaced."""
    import torch

    from electra_pretrain.modeling import ElectraDiscriminator
    from electra_pretrain.tokenizer import load_tokenizer

    model = ElectraDiscriminator.from_pretrained(args.model_dir).eval()
    tokenizer = load_tokenizer(args.model_dir)
    if tokenizer.get_vocab_size() != model.config.vocab_size:
        raise ValueError(f"{args.model_dir}: tokenizer has {tokenizer.get_vocab_size()} tokens, the model "
                         f"{model.config.vocab_size}")
    encoding = tokenizer.encode(args.sentence)
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.tensor([encoding.ids]),
                                    token_type_ids=torch.tensor([encoding.type_ids])))[0]
    rows = [{"token": token, "probability": round(prob, 4)} for token, prob in zip(encoding.tokens, probs.tolist())
            if token not in ("[CLS]", "[SEP]")]
    if args.json:
        print(json.dumps(rows))
        return
    width = max((len(row["token"]) for row in rows), default=0)
    for row in rows:
        flag = "  <- replaced?" if row["probability"] > args.threshold else ""
        print(f"{row['token']:<{width}}  {row['probability']:.3f}{flag}")


def cmd_evaluate(args) -> None:
    """Held-out metrics of a checkpoint, an export or a discriminator on text files (evaluate.py)."""
    from accelerate import Accelerator

    from electra_pretrain.evaluate import EVAL_SEED, Evaluator, held_out_batches, load_target
    from electra_pretrain.sources import SourceSpec, documents

    target = load_target(args.path)
    trained = target.train_config.get("data", {})
    spec = SourceSpec(files=args.data, format=args.format or trained.get("format", "auto"),
                      text_field=args.text_field or trained.get("text_field", "text"),
                      document_boundary=args.document_boundary or trained.get("document_boundary", "blank_line"))
    max_seq_length = args.seq_len or trained.get("max_seq_length", 128)
    max_tokens = args.max_tokens or target.train_config.get("trainer", {}).get("eval_tokens", 65_536)
    rows = documents([spec], seed=EVAL_SEED, shuffle_files=False, held_out_share=args.held_out_share,
                     held_out=True)
    batches = held_out_batches((row["text"] for row in rows), target.tokenizer, max_seq_length, max_tokens)
    evaluator = Evaluator(batches, target.tokenizer, Accelerator(cpu=args.device == "cpu"))
    electra = target.electra.to(evaluator.accelerator.device) if target.electra is not None else None
    discriminator = target.discriminator.to(evaluator.accelerator.device)
    results = {**evaluator(electra, discriminator), "tokens": evaluator.held_out_tokens}
    if args.json:
        print(json.dumps(results))
        return
    print(f"{args.path}: {evaluator.held_out_tokens} held-out tokens, sequences of {max_seq_length}")
    for name, value in results.items():
        print(f"  {name:<24} {value:.4f}" if isinstance(value, float) else f"  {name:<24} {value}")


def cmd_plot(args) -> None:
    from electra_pretrain.plot import plot_runs

    print(f"wrote {plot_runs(args.run_dirs, args.out, args.x)}")


def cmd_bench(args) -> None:
    from electra_pretrain.bench import bench_ablation, bench_model

    if args.ablation:
        cmd_bench_ablation(args, bench_ablation(args))
        return
    result = bench_model(args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.model} seq {args.seq_len} batch {args.batch_size} {args.precision} on {args.device}"
          f"{'' if args.device != 'cpu' else ', freed memory kept' if args.keep_freed_memory else ', glibc default'}")
    print(f"  ours:      {result['step_time_s'] * 1e3:8.1f} ms/step  {result['tokens_per_s']:10.0f} tok/s  "
          f"MFU {result['mfu']:.1%}  peak mem {result['peak_mem_bytes'] / 2**20:.0f} MiB")
    print(f"  model FLOPs per token {result['flops_per_token'] / 1e6:.1f} M; peak {result['peak_flops'] / 1e12:.2f} "
          f"TFLOP/s ({result['peak_flops_source']})")
    if "reference" in result:
        ref = result["reference"]
        print(f"  reference ({ref['kind']}): {ref['step_time_s'] * 1e3:8.1f} ms/step  {ref['tokens_per_s']:10.0f} "
              f"tok/s  peak mem {ref['peak_mem_bytes'] / 2**20:.0f} MiB")
        print(f"  speed-up x{result['speedup_vs_reference']:.2f}, memory ratio "
              f"{result['memory_ratio_vs_reference']:.2f}")


def cmd_bench_ablation(args, rows: list[dict]) -> None:
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.model} seq {args.seq_len} batch {args.batch_size} on {args.device}: each row adds one change")
    print(f"{'change':<100} {'ms/step':>8} {'tok/s':>8} {'vs above':>8} {'vs naive':>8} {'peak MiB':>8}")
    previous = rows[0]
    for row in rows:
        print(f"{row['change']:<100} {row['step_time_s'] * 1e3:8.0f} {row['tokens_per_s']:8.0f} "
              f"{row['tokens_per_s'] / previous['tokens_per_s']:7.2f}x {row['tokens_per_s'] / rows[0]['tokens_per_s']:7.2f}x "
              f"{row['peak_mem_bytes'] / 2**20:8.0f}")
        if not row["probe"]:
            previous = row


def cmd_bench_data(args) -> None:
    from electra_pretrain.bench import bench_data

    workers = [int(w) for w in args.workers.split(",")]
    result = bench_data(args.files, args.document_boundary, args.tokenizer, args.vocab_size, args.seq_len,
                        args.examples, workers)
    if args.json:
        print(json.dumps(result))
        return
    for row in result["rows"]:
        print(f"data, {row['num_workers']} worker(s): {row['tokens_per_s']:.0f} tokens/s per process "
              f"(x{row['ratio']:.2f}; {row['examples']} examples, {row['seconds']:.1f} s), padding share "
              f"{row['padding_share']:.2%}")


def cmd_bench_finetune(args) -> None:
    from electra_pretrain.bench_finetune import bench_finetune

    result = bench_finetune(args.model, args.train, args.validation, [int(s) for s in args.seeds.split(",")],
                            args.epochs, args.lr, args.batch_size, args.max_length)
    if args.json:
        print(json.dumps(result))
        return
    print(f"fine-tuning {result['model']}: {result['train_examples']} training examples, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr:g}, layer-wise decay off")
    print(f"{'seed':>4} {'ours acc':>9} {'peer acc':>9} {'ours ex/s':>10} {'peer ex/s':>10}")
    for row in result["per_seed"]:
        print(f"{row['seed']:>4} {row['ours']['accuracy']:9.4f} {row['transformers']['accuracy']:9.4f} "
              f"{row['ours']['examples_per_s']:10.1f} {row['transformers']['examples_per_s']:10.1f}")
    mean = result["mean"]
    print(f"mean {mean['ours']['accuracy']:9.4f} {mean['transformers']['accuracy']:9.4f} "
          f"{mean['ours']['examples_per_s']:10.1f} {mean['transformers']['examples_per_s']:10.1f}")
    print(f"accuracy difference {result['accuracy_difference_points']:+.2f} points; throughput "
          f"x{result['throughput_ratio']:.2f} of the transformers loop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="electra-pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    train_run = sub.add_parser("train", help="pretrain: the same as `python train.py <overrides>` (Hydra)")
    train_run.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides, e.g. model=tiny")
    train_run.set_defaults(func=cmd_train)
    finetune_run = sub.add_parser("finetune", help="fine-tune: the same as `python finetune.py <overrides>` (Hydra)")
    finetune_run.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides, e.g. task=sst2")
    finetune_run.set_defaults(func=cmd_finetune)
    spam = sub.add_parser("spam-corpus", help="the SpamAssassin npm package's messages as train/validation/test csv")
    spam.add_argument("package_data", type=Path, help="the unpacked package's data/ folder")
    spam.add_argument("--out", type=Path, default=Path("data/spam"), help="folder for the csv files")
    spam.set_defaults(func=cmd_spam_corpus)

    tok = sub.add_parser("tokenizer", help="tokenizer tools").add_subparsers(dest="action", required=True)
    train = tok.add_parser("train", help="train a WordPiece tokenizer on text files")
    train.add_argument("files", nargs="+", help="files, globs or directories")
    train.add_argument("--vocab-size", type=int, default=30522, help="tokens in the vocabulary (default 30522)")
    train.add_argument("--out", required=True, help="the folder to write the tokenizer files to")
    train.add_argument("--cased", action="store_true", help="keep case and accents (default: uncased)")
    train.add_argument("--document-boundary", default="blank_line", choices=DOCUMENT_BOUNDARIES,
                       help="text files: a blank line ends a document, or one document per line")
    train.add_argument("--text-field", default="text", help="json / parquet / csv: the field holding the text")
    train.set_defaults(func=cmd_tokenizer_train)

    export = sub.add_parser("export", help="export a resume checkpoint as discriminator/ and generator/")
    export.add_argument("checkpoint", help="output_dir/checkpoints/step_<N>")
    export.add_argument("--out", required=True, help="the folder to write discriminator/ and generator/ to")
    export.set_defaults(func=cmd_export)

    detect = sub.add_parser("detect", help="per-token probability of having been replaced")
    detect.add_argument("model_dir", help="an exported discriminator folder")
    detect.add_argument("sentence", help="the text to score")
    detect.add_argument("--threshold", type=float, default=0.5, help="mark tokens above this probability")
    detect.add_argument("--json", action="store_true", help='print [{"token": ..., "probability": ...}, ...]')
    detect.set_defaults(func=cmd_detect)

    evaluate = sub.add_parser("evaluate", help="held-out metrics (MLM, RTD, AUCs) on text files")
    evaluate.add_argument("path", help="a checkpoint folder, an export folder (discriminator/ + generator/) or a "
                                       "discriminator folder alone (then only random_replacement_auc)")
    evaluate.add_argument("--data", nargs="+", required=True, help="files, globs or directories, as data.files")
    evaluate.add_argument("--max-tokens", type=int, default=None,
                          help="non-pad tokens to evaluate (default: the run's trainer.eval_tokens, else 65536)")
    evaluate.add_argument("--held-out-share", type=float, default=0.0,
                          help="evaluate only the documents a run with data.eval_share=S held out")
    evaluate.add_argument("--seq-len", type=int, default=None, help="default: the run's data.max_seq_length, else 128")
    evaluate.add_argument("--document-boundary", default=None, choices=DOCUMENT_BOUNDARIES,
                          help="text files (default: the run's, else blank_line)")
    evaluate.add_argument("--format", default=None, choices=FORMATS, help="default: the run's, else by suffix")
    evaluate.add_argument("--text-field", default=None, help="json / parquet / csv (default: the run's, else text)")
    evaluate.add_argument("--device", default="cuda" if _cuda() else "cpu", choices=["cpu", "cuda"],
                          help="where to evaluate (default: cuda when available)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_evaluate)

    plot = sub.add_parser("plot", help="curves of one or more runs (metrics.jsonl) as a PNG")
    plot.add_argument("run_dirs", nargs="+", help="runs' output_dir folders, overlaid")
    plot.add_argument("--out", default="curves.png", help="the PNG to write")
    plot.add_argument("--x", default="step", choices=X_AXES, help="the horizontal axis")
    plot.set_defaults(func=cmd_plot)

    bench = sub.add_parser("bench", help="time training steps (ours vs a transformers peer), or the data pipeline")
    bench_sub = bench.add_subparsers(dest="target")
    data = bench_sub.add_parser("data", help="tokens/s of the example pipeline")
    data.add_argument("files", nargs="+", help="files, globs or directories")
    data.add_argument("--document-boundary", default="blank_line", choices=DOCUMENT_BOUNDARIES,
                      help="text files: a blank line ends a document, or one document per line")
    data.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one on the files)")
    data.add_argument("--vocab-size", type=int, default=30522, help="when a tokenizer is trained (no --tokenizer)")
    data.add_argument("--seq-len", type=int, default=128, help="tokens per example")
    data.add_argument("--examples", type=int, default=20000, help="examples to build and time")
    data.add_argument("--workers", default="0,1,2", help="dataloader worker counts to time, comma-separated")
    data.add_argument("--json", action="store_true", help="print one JSON object")
    data.set_defaults(func=cmd_bench_data)
    tune = bench_sub.add_parser("finetune", help="our fine-tuning loop vs a transformers-built one: accuracy and "
                                                 "examples/s on the same data (layer-wise decay off)")
    tune.add_argument("model", help="an export folder or a transformers ELECTRA discriminator folder")
    tune.add_argument("--train", default="data/spam/train.csv", help="csv with text and label columns")
    tune.add_argument("--validation", default="data/spam/validation.csv", help="csv with text and label columns")
    tune.add_argument("--seeds", default="0,1,2", help="comma-separated; accuracy is averaged over them")
    tune.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    tune.add_argument("--lr", type=float, default=3e-4, help="finetune.py's default for models up to width 256")
    tune.add_argument("--batch-size", type=int, default=32, help="examples per optimizer step")
    tune.add_argument("--max-length", type=int, default=128, help="tokens per example, at most")
    tune.add_argument("--json", action="store_true", help="print one JSON object")
    tune.set_defaults(func=cmd_bench_finetune)
    bench.add_argument("--model", default="small", choices=sorted(PRESETS), help="model preset to time")
    bench.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    bench.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    bench.add_argument("--vocab-size", type=int, default=30522, help="our model's vocabulary (e.g. a run "
                                                                        "tokenizer's, to compare with train.py)")
    bench.add_argument("--precision", default="no", choices=MIXED_PRECISIONS, help="accelerate mixed precision")
    bench.add_argument("--device", default="cuda" if _cuda() else "cpu", choices=["cpu", "cuda"],
                       help="where to time (default: cuda when available)")
    bench.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    bench.add_argument("--compile", action="store_true", help="torch.compile the step")
    bench.add_argument("--no-reference", dest="reference", action="store_false",
                       help="skip the transformers-built peer")
    bench.add_argument("--ablation", action="store_true",
                       help="time the fast path one change at a time, from a naive step (no reference)")
    bench.add_argument("--default-malloc", dest="keep_freed_memory", action="store_false",
                       help="CPU: leave glibc's allocator as it is in every worker (trainer.keep_freed_memory=false)")
    bench.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: measured "
                                                                         "on CPU, data sheet on GPU)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench)
    return parser


def cmd_train(args) -> None:
    from electra_pretrain.train import main as train_main

    sys.argv = [f"{sys.argv[0]} train", *args.overrides]  # Hydra reads its overrides from sys.argv
    train_main()


def cmd_finetune(args) -> None:
    from electra_pretrain.finetune import main as finetune_main

    sys.argv = [f"{sys.argv[0]} finetune", *args.overrides]
    finetune_main()


def cmd_spam_corpus(args) -> None:
    from electra_pretrain.spam_corpus import write_splits

    for split, counts in write_splits(args.package_data, args.out).items():
        print(f"{args.out / split}.csv: {counts['ham']} ham, {counts['spam']} spam")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("electra-pretrain")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
