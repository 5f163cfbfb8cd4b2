"""The `electra-pretrain` command: tokenizer training, export, replaced-token detection and benchmarks.

Training itself is `accelerate launch train.py ...` (Hydra); these are the tools around it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from electra_pretrain.config import MIXED_PRECISIONS
from electra_pretrain.modeling import PRESETS
from electra_pretrain.sources import DOCUMENT_BOUNDARIES


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
    width = max(len(t) for t in encoding.tokens)
    for token, prob in zip(encoding.tokens, probs.tolist()):
        if token in ("[CLS]", "[SEP]"):
            continue
        flag = "  <- replaced?" if prob > 0.5 else ""
        print(f"{token:<{width}}  {prob:.3f}{flag}")


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

    result = bench_data(args.files, args.document_boundary, args.tokenizer, args.vocab_size, args.seq_len,
                        args.examples)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"data: {result['tokens_per_s']:.0f} tokens/s per process ({result['examples']} examples, "
              f"{result['seconds']:.1f} s), padding share {result['padding_share']:.2%}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="electra-pretrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tok = sub.add_parser("tokenizer", help="tokenizer tools").add_subparsers(dest="action", required=True)
    train = tok.add_parser("train", help="train a WordPiece tokenizer on text files")
    train.add_argument("files", nargs="+", help="files, globs or directories")
    train.add_argument("--vocab-size", type=int, default=30522)
    train.add_argument("--out", required=True)
    train.add_argument("--cased", action="store_true", help="keep case and accents (default: uncased)")
    train.add_argument("--document-boundary", default="blank_line", choices=DOCUMENT_BOUNDARIES)
    train.add_argument("--text-field", default="text")
    train.set_defaults(func=cmd_tokenizer_train)

    export = sub.add_parser("export", help="export a resume checkpoint as discriminator/ and generator/")
    export.add_argument("checkpoint", help="output_dir/checkpoints/step_<N>")
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_export)

    detect = sub.add_parser("detect", help="per-token probability of having been replaced")
    detect.add_argument("model_dir", help="an exported discriminator folder")
    detect.add_argument("sentence")
    detect.set_defaults(func=cmd_detect)

    bench = sub.add_parser("bench", help="time training steps (ours vs a transformers peer), or the data pipeline")
    bench_sub = bench.add_subparsers(dest="target")
    data = bench_sub.add_parser("data", help="tokens/s of the example pipeline")
    data.add_argument("files", nargs="+")
    data.add_argument("--document-boundary", default="blank_line", choices=DOCUMENT_BOUNDARIES)
    data.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one on the files)")
    data.add_argument("--vocab-size", type=int, default=30522)
    data.add_argument("--seq-len", type=int, default=128)
    data.add_argument("--examples", type=int, default=20000)
    data.add_argument("--json", action="store_true")
    data.set_defaults(func=cmd_bench_data)
    bench.add_argument("--model", default="small", choices=sorted(PRESETS))
    bench.add_argument("--seq-len", type=int, default=128)
    bench.add_argument("--batch-size", type=int, default=32)
    bench.add_argument("--precision", default="no", choices=MIXED_PRECISIONS)
    bench.add_argument("--device", default="cuda" if _cuda() else "cpu", choices=["cpu", "cuda"])
    bench.add_argument("--steps", type=int, default=10)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--compile", action="store_true")
    bench.add_argument("--no-reference", dest="reference", action="store_false")
    bench.add_argument("--ablation", action="store_true",
                       help="time the fast path one change at a time, from a naive step (no reference)")
    bench.add_argument("--default-malloc", dest="keep_freed_memory", action="store_false",
                       help="CPU: leave glibc's allocator as it is in every worker (trainer.keep_freed_memory=false)")
    bench.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: measured "
                                                                         "on CPU, data sheet on GPU)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
    return parser


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
