"""Start-up steps of a run that are not the loop: config-change guard, tokenizer checks, the summary printed first."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterable
from pathlib import Path

from accelerate import Accelerator
from tokenizers import Tokenizer

from electra_pretrain.jobs import yaml_mapping
from electra_pretrain.pretrain.config import SourceSpec, TokenizerConfig, TrainConfig
from electra_pretrain.pretrain.objective import Electra, Objective
from electra_pretrain.pretrain.sources import documents
from electra_pretrain.tokenizer import MIN_VOCAB_SIZE, load_tokenizer, save_tokenizer, token_id, train_tokenizer

# Keys that may change between a run and its resumption without changing what is being trained; output_dir is
# where the run is, not what it trains, so a moved or relatively named run folder resumes.
ALWAYS_ALLOWED = (
    "model.verify_checksums",
    "output_dir",
    "trainer.save_every",
    "trainer.keep_last",
    "trainer.log_every",
    "trainer.export",
    "trainer.allow_config_change",
    "trainer.resume_from",
    "trainer.max_skips_in_a_row",
    "trainer.keep_freed_memory",
    "logging.",
)
UNKNOWN_SAMPLE_DOCUMENTS = 200  # documents read to measure the [UNK] share
UNKNOWN_SAMPLE_CHARS = 2_000_000


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _matches(key: str, patterns) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def config_changes(output_dir: Path, config_yaml: str, allowed: list[str]) -> list[str]:
    """Refuse to resume a run folder whose saved config differs in a key that is not allowed to, naming the keys;
    returns the allowed changes ("key: old -> new") for the log."""
    saved_file = output_dir / "config.yaml"
    if not saved_file.is_file():
        return []
    saved = _flatten(yaml_mapping(saved_file.read_text()))
    current = _flatten(yaml_mapping(config_yaml))
    differing = sorted(
        key
        for key in saved.keys() | current.keys()
        if saved.get(key) != current.get(key) and not _matches(key, ALWAYS_ALLOWED)
    )
    describe = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing]
    refused = [d for k, d in zip(differing, describe) if not _matches(k, allowed)]
    if refused:
        raise ValueError(
            f"{output_dir} holds a run with a different config ({', '.join(refused)}); use another "
            "output_dir, or list the keys that may change, e.g. "
            f"trainer.allow_config_change=[{','.join(k for k in differing if not _matches(k, allowed))}]"
        )
    return describe


def prepare_tokenizer(
    config: TokenizerConfig,
    specs: list[SourceSpec],
    output_dir: Path,
    accelerator: Accelerator,
    seed: int,
    checkpoint_copy: Path | None,
    held_out_share: float = 0.0,
    pretrained: Path | None = None,
) -> Tokenizer:
    """tokenizer.path if given; else the pretrained discriminator folder's; else the run's own
    (output_dir/tokenizer), trained on the data the first time.

    A run tokenizer that is damaged or differs from the newest checkpoint's copy is restored from that copy. A
    tokenizer learnt from (next to) no text, or one that turns the data mostly into [UNK], is an error and is never
    saved in the run folder.
    """
    path = config.path or pretrained
    if path is not None:
        tokenizer = load_tokenizer(path)
        check_tokenizer_fits(tokenizer, specs, seed, config.max_unknown_share, str(path))
        return tokenizer
    own = output_dir / "tokenizer"
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            _restore_if_damaged(own, checkpoint_copy, accelerator)
            if not (own / "tokenizer.json").is_file():
                rows = documents(specs, seed=seed, shuffle_files=False, held_out_share=held_out_share)
                texts: Iterable[str] = (row["text"] for row in rows)
                if config.train_documents:
                    texts = itertools.islice(texts, config.train_documents)
                accelerator.print(f"training a {config.vocab_size}-token WordPiece tokenizer on the data -> {own}")
                tokenizer = train_tokenizer(
                    texts,
                    vocab_size=config.vocab_size,
                    lowercase=config.lowercase,
                    show_progress=accelerator.is_main_process,
                )
                check_tokenizer_fits(tokenizer, specs, seed, config.max_unknown_share, "the tokenizer trained")
                save_tokenizer(tokenizer, own)
    return load_tokenizer(own)


def _restore_if_damaged(own: Path, checkpoint_copy: Path | None, accelerator: Accelerator) -> None:
    if checkpoint_copy is None:
        return
    try:
        damaged = load_tokenizer(own).get_vocab() != load_tokenizer(checkpoint_copy).get_vocab()
    except (ValueError, FileNotFoundError):
        damaged = True
    if damaged:
        accelerator.print(
            f"WARNING: {own} is missing, damaged or differs from the copy in {checkpoint_copy.parent}; "
            "restored it from that copy"
        )
        shutil.rmtree(own, ignore_errors=True)
        shutil.copytree(checkpoint_copy, own)


def check_tokenizer_fits(
    tokenizer: Tokenizer, specs: list[SourceSpec], seed: int, max_unknown_share: float, name: str
) -> None:
    """Refuse a degenerate tokenizer: too few tokens, or [UNK] for more than `max_unknown_share` of the data."""
    size = tokenizer.get_vocab_size()
    if size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"tokenizer: {name} has only {size} tokens (at least {MIN_VOCAB_SIZE} needed); the data "
            "is empty or too small to learn a vocabulary from: give more text, or tokenizer.path"
        )
    unk = token_id(tokenizer, "[UNK]")
    total = unknown = chars = 0
    for row in itertools.islice(documents(specs, seed=seed, shuffle_files=False), UNKNOWN_SAMPLE_DOCUMENTS):
        ids = tokenizer.encode(row["text"][:UNKNOWN_SAMPLE_CHARS], add_special_tokens=False).ids
        total += len(ids)
        unknown += ids.count(unk)
        chars += len(row["text"])
        if chars >= UNKNOWN_SAMPLE_CHARS:
            break
    if total and unknown / total > max_unknown_share:
        raise ValueError(
            f"tokenizer: {name} turns {unknown / total:.0%} of the data's tokens into [UNK] (limit "
            f"tokenizer.max_unknown_share={max_unknown_share}); it does not fit this text (another "
            "language or script, or binary files?)"
        )


def startup_summary(
    config: TrainConfig,
    model: Objective,
    num_processes: int,
    micro_batch: int,
    accumulation: int,
    flops_per_token: float,
    warmup_steps: int,
    precision: str,
) -> str:
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    def sizes(c) -> str:
        return (
            f"{c.num_hidden_layers} layers x {c.hidden_size} (E={c.embedding_size}, FFN {c.intermediate_size}, "
            f"{c.num_attention_heads} heads)"
        )

    if isinstance(model, Electra):
        gen, disc = model.generator.config, model.discriminator.config
        lines = [
            f"discriminator: {sizes(disc)}, {count(model.discriminator) / 1e6:.2f}M params",
            f"generator:     {sizes(gen)}, {count(model.generator) / 1e6:.2f}M params",
            f"joint module:  {count(model) / 1e6:.2f}M params (embedding sharing: {model.embedding_sharing}), "
            f"vocab {disc.vocab_size}",
        ]
    else:
        mlm = model.model.config
        lines = [
            f"masked LM:     {sizes(mlm)}, {count(model) / 1e6:.2f}M params, vocab {mlm.vocab_size} "
            "(model.objective=mlm, the BERT-style baseline)"
        ]
    lines += [
        f"batch:         {config.trainer.global_batch_size} sequences x {config.data.max_seq_length} tokens = "
        f"{num_processes} processes x {micro_batch} micro-batch x {accumulation} accumulation steps",
        f"FLOPs:         {flops_per_token / 1e6:.1f} MFLOP per token (train), "
        f"{flops_per_token * config.trainer.global_batch_size * config.data.max_seq_length / 1e12:.3f} TFLOP per "
        "step at full length",
        f"schedule:      {config.trainer.max_steps} steps, lr {config.optim.lr} warmup {warmup_steps}, "
        f"precision {precision}",
    ]
    return "\n".join(lines)
