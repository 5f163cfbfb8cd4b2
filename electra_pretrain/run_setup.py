"""Start-up steps of a run that are not the loop: config-change guard, tokenizer, the summary printed first."""

from __future__ import annotations

import itertools
from pathlib import Path

from accelerate import Accelerator
from omegaconf import OmegaConf
from tokenizers import Tokenizer

from electra_pretrain.config import TokenizerConfig, TrainConfig
from electra_pretrain.objective import Electra
from electra_pretrain.sources import SourceSpec, documents
from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

# Keys that may change between a run and its resumption without changing what is being trained.
RESUMABLE_CHANGES = ("trainer.save_every", "trainer.keep_last", "trainer.log_every", "trainer.export",
                     "trainer.allow_config_change", "trainer.max_fp16_skips_in_a_row", "trainer.keep_freed_memory",
                     "logging.")


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def check_config_unchanged(output_dir: Path, config_yaml: str, allow_change: bool) -> None:
    """Refuse to resume a run folder whose saved config differs, naming the keys (trainer.allow_config_change)."""
    saved_file = output_dir / "config.yaml"
    if not saved_file.is_file() or allow_change:
        return
    saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_file)))
    current = _flatten(OmegaConf.to_container(OmegaConf.create(config_yaml)))
    differing = sorted(key for key in saved.keys() | current.keys()
                       if saved.get(key) != current.get(key) and not key.startswith(RESUMABLE_CHANGES))
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing)
        raise ValueError(f"{output_dir} holds a run with a different config ({details}); use another output_dir "
                         "or pass trainer.allow_config_change=true")


def prepare_tokenizer(config: TokenizerConfig, specs: list[SourceSpec], output_dir: Path,
                      accelerator: Accelerator, seed: int) -> Tokenizer:
    """tokenizer.path if given; else the run's own (output_dir/tokenizer), trained on the data the first time."""
    if config.path:
        return load_tokenizer(config.path)
    own = output_dir / "tokenizer"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (own / "tokenizer.json").is_file():
            texts = (row["text"] for row in documents(specs, seed=seed, shuffle_files=False))
            if config.train_documents:
                texts = itertools.islice(texts, config.train_documents)
            accelerator.print(f"training a {config.vocab_size}-token WordPiece tokenizer on the data -> {own}")
            save_tokenizer(train_tokenizer(texts, vocab_size=config.vocab_size, lowercase=config.lowercase), own)
    return load_tokenizer(own)


def startup_summary(config: TrainConfig, model: Electra, num_processes: int, micro_batch: int, accumulation: int,
                    flops_per_token: float) -> str:
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    gen, disc = model.generator.config, model.discriminator.config
    lines = [
        f"discriminator: {disc.num_hidden_layers} layers x {disc.hidden_size} (E={disc.embedding_size}, "
        f"FFN {disc.intermediate_size}, {disc.num_attention_heads} heads), {count(model.discriminator) / 1e6:.2f}M "
        "params",
        f"generator:     {gen.num_hidden_layers} layers x {gen.hidden_size} (FFN {gen.intermediate_size}, "
        f"{gen.num_attention_heads} heads), {count(model.generator) / 1e6:.2f}M params",
        f"joint module:  {count(model) / 1e6:.2f}M params (embedding sharing: {model.embedding_sharing}), "
        f"vocab {disc.vocab_size}",
        f"batch:         {config.trainer.global_batch_size} sequences x {config.data.max_seq_length} tokens = "
        f"{num_processes} processes x {micro_batch} micro-batch x {accumulation} accumulation steps",
        f"FLOPs:         {flops_per_token / 1e6:.1f} MFLOP per token (train), "
        f"{flops_per_token * config.trainer.global_batch_size * config.data.max_seq_length / 1e12:.3f} TFLOP per "
        "step at full length",
        f"schedule:      {config.trainer.max_steps} steps, lr {config.optim.lr} warmup {config.optim.warmup_steps}, "
        f"precision {config.trainer.mixed_precision}",
    ]
    return "\n".join(lines)
