"""Typed training configuration: dataclass schemas registered with Hydra's ConfigStore, validated once.

The YAML tree in configs/ only fills these schemas, so a mistyped key or a value of the wrong type fails at
compose time, and `__post_init__` checks values before anything heavy is built. Each component gets its own
sub-config. Derived sizes (gradient accumulation, generator width) are computed here and printed at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore

from electra_pretrain.config_base import MIXED_PRECISIONS, AdamWConfig, check_choice
from electra_pretrain.model_config import (
    ATTN_IMPLEMENTATIONS,
    DROPOUT_IMPLEMENTATIONS,
    PRESETS,
    ElectraConfig,
    generator_config,
    preset_config,
)
from electra_pretrain.tokenizer import MIN_VOCAB_SIZE
from electra_pretrain.tracking import LoggingConfig, register_logging_configs

OBJECTIVES = ("rtd", "mlm")  # replaced-token detection (ELECTRA) | BERT-style masked LM, the baseline
EMBEDDING_SHARING = ("tied", "gdes", "none")  # objective.share_embeddings
# How many tokens a row masks. distinct: round(mask_prob x maskable tokens). original: as many distinct tokens as
# google-research/electra's rule corrupts on average (pretrain_helpers.py draws N = round(mask_prob x non-pad
# tokens) positions *with replacement* among the maskable ones; duplicates collapse, so M maskable tokens get
# M (1 - (1 - 1/M)^N) distinct positions: about 14% of tokens for Small against 15%).
MASKED_COUNTS = ("distinct", "original")
SPIKE_ACTIONS = ("skip", "stop")  # step.LossSpikeGuard: a spiking update is skipped (counted) or stops the run
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
DATA_FORMATS = ("auto", "text", "json", "parquet", "csv")  # auto: by suffix
DOCUMENT_BOUNDARIES = ("blank_line", "line")

SIZE_FIELDS = ("num_hidden_layers", "hidden_size", "embedding_size", "num_attention_heads", "intermediate_size")


@dataclass
class ModelConfig:
    """Architecture (a preset from google-research/electra) and the RTD objective."""

    preset: str = "tiny"  # tiny | small | base | large
    # rtd: the joint generator + discriminator (ELECTRA); mlm: one encoder of the discriminator's size trained as a
    # BERT-style masked LM with the same masking, data and schedule (the baseline RTD is measured against)
    objective: str = "rtd"
    # Sizes that replace the preset's when set (e.g. a deeper or wider model for a time budget).
    num_hidden_layers: int | None = None
    hidden_size: int | None = None
    embedding_size: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    # Continued pretraining from transformers-format folders (init_from.py); their config.json sets the sizes.
    init_from: str | None = None  # an export root: DIR/discriminator + DIR/generator
    init_discriminator: str | None = None  # or a released-layout discriminator folder
    init_generator: str | None = None  # and optionally its generator (else a fresh one shares its embeddings)
    verify_checksums: bool = True  # check those folders against their checksums.json (false: read them anyway)
    generator_hidden_fraction: float = 0.25  # generator width / discriminator width (GR: small 0.25, base 1/3)
    embedding_sharing: str = "tied"  # tied | gdes (DeBERTa-v3) | none
    attn_implementation: str = "sdpa"  # sdpa | eager
    dropout_implementation: str = "auto"  # auto (packed on CPU, torch on GPU) | torch | packed (dropout.py)
    max_position_embeddings: int = 512
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    mask_prob: float = 0.15  # GR: 0.15 for small and base, 0.25 for large
    mask_token_share: float = 0.85  # of masked tokens, replaced by [MASK]; the rest are kept or random
    random_token_share: float = 0.0
    temperature: float = 1.0  # generator sampling temperature
    masked_count: str = "distinct"  # distinct | original (GR's draws with replacement, in expectation)
    original_init: bool = False  # Glorot-uniform embeddings_project and RTD output layer, as GR's tf.layers.dense
    gen_weight: float = 1.0
    disc_weight: float = 50.0

    def __post_init__(self) -> None:
        check_choice("model.preset", self.preset, sorted(PRESETS))
        check_choice("model.objective", self.objective, OBJECTIVES)
        if self.objective == "mlm" and (self.init_from or self.init_discriminator):
            raise ValueError(
                "model.objective=mlm trains a masked LM from scratch; model.init_from / "
                "init_discriminator continue an ELECTRA pair (model.objective=rtd)"
            )
        check_choice("model.embedding_sharing", self.embedding_sharing, EMBEDDING_SHARING)
        check_choice("model.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        check_choice("model.dropout_implementation", self.dropout_implementation, DROPOUT_IMPLEMENTATIONS)
        check_choice("model.masked_count", self.masked_count, MASKED_COUNTS)
        if self.init_from and (self.init_discriminator or self.init_generator):
            raise ValueError("model: give either model.init_from or model.init_discriminator (+ init_generator)")
        if self.init_generator and not self.init_discriminator:
            raise ValueError("model.init_generator needs model.init_discriminator")
        if not 0.0 < self.generator_hidden_fraction <= 1.0:
            raise ValueError(f"model.generator_hidden_fraction must be in (0, 1], got {self.generator_hidden_fraction}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"model.mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.mask_token_share + self.random_token_share > 1.0:
            raise ValueError("model.mask_token_share + model.random_token_share must be <= 1")
        if self.temperature <= 0:
            raise ValueError(f"model.temperature must be > 0, got {self.temperature}")

    def discriminator(self, vocab_size: int, pad_token_id: int) -> ElectraConfig:
        sizes = {name: getattr(self, name) for name in SIZE_FIELDS if getattr(self, name) is not None}
        return preset_config(
            self.preset,
            **sizes,
            vocab_size=vocab_size,
            pad_token_id=pad_token_id,
            max_position_embeddings=self.max_position_embeddings,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
        )

    def generator(self, vocab_size: int, pad_token_id: int) -> ElectraConfig:
        return generator_config(self.discriminator(vocab_size, pad_token_id), self.generator_hidden_fraction)


@dataclass
class SourceSpec:
    """One source of documents (the `data.sources` entries of the Hydra config)."""

    files: list[str] = field(default_factory=list)  # files, globs or directories (local sources)
    hub: str | None = None  # a hub dataset name instead of files
    hub_config: str | None = None
    split: str = "train"
    format: str = "auto"  # auto (by suffix) | text | json | parquet | csv
    text_field: str = "text"  # the column holding the text (json, parquet, csv, hub)
    document_boundary: str = "blank_line"  # text files: blank_line | line
    weight: float = 1.0

    def __post_init__(self) -> None:
        if bool(self.files) == bool(self.hub):
            raise ValueError("a data source needs exactly one of `files` or `hub`")
        check_choice("data source format", self.format, DATA_FORMATS)
        check_choice("document_boundary", self.document_boundary, DOCUMENT_BOUNDARIES)
        if self.weight <= 0:
            raise ValueError(f"data source weight must be > 0, got {self.weight}")


@dataclass
class DataConfig:
    """Where text comes from and how examples are built. `files` is shorthand for a single source."""

    files: list[str] = field(default_factory=list)  # files, globs or directories
    hub: str | None = None  # a hub dataset name instead of files (needs network)
    hub_config: str | None = None
    split: str = "train"
    format: str = "auto"  # auto | text | json | parquet | csv
    text_field: str = "text"
    document_boundary: str = "blank_line"  # text files: blank_line (original format) | line (a document per line)
    sources: list[SourceSpec] = field(default_factory=list)  # a weighted mixture, instead of files / hub
    max_seq_length: int = 128
    shuffle_buffer: int = 1000  # examples
    # With at least as many files as readers (processes x workers), each reader reads only its own files; false:
    # every reader reads every document and tokenizes its share (always so for mixtures of sources).
    shard_files: bool = True
    num_workers: int | None = None  # dataloader workers per process; None: from the CPU count on GPU, 0 on CPU
    prefetch_factor: int = 2  # batches each worker builds ahead
    eval_files: list[str] = field(default_factory=list)  # held-out text for evaluation (same format as files)
    eval_share: float = 0.0  # or: this share of the training documents is held out (by text hash), never trained on
    # Or: a folder of examples built once by `electra-pretrain prepare` (data=prepared), read instead of tokenizing.
    path: str | None = None
    verify_checksums: bool = True  # data.path: check its files against checksums.json at start-up

    def __post_init__(self) -> None:
        if self.max_seq_length < 8:
            raise ValueError(f"data.max_seq_length must be >= 8, got {self.max_seq_length}")
        if (self.num_workers or 0) < 0 or self.shuffle_buffer < 0 or self.prefetch_factor < 1:
            raise ValueError("data.num_workers and data.shuffle_buffer must be >= 0, data.prefetch_factor >= 1")
        if self.sources and (self.files or self.hub):
            raise ValueError("data: give either data.sources or data.files / data.hub, not both")
        if self.path and (self.sources or self.files or self.hub):
            raise ValueError("data: give either data.path (prepared examples) or data.files / data.hub / data.sources")
        if not 0.0 <= self.eval_share < 1.0:
            raise ValueError(f"data.eval_share must be in [0, 1), got {self.eval_share}")
        if self.eval_files and self.eval_share:
            raise ValueError("data: give either data.eval_files or data.eval_share, not both")
        # OmegaConf hands list entries over as dataclass instances already; validate each once more.
        self.sources = [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in self.sources]

    def source_specs(self) -> list[SourceSpec]:
        if self.path:
            return []  # prepared examples: the sources were read by `electra-pretrain prepare`
        if self.sources:
            return self.sources
        if not (self.files or self.hub):
            raise ValueError("data: no input; set data.files='[path/*.txt]' (or data.hub, or data.sources)")
        return [
            SourceSpec(
                files=list(self.files),
                hub=self.hub,
                hub_config=self.hub_config,
                split=self.split,
                format=self.format,
                text_field=self.text_field,
                document_boundary=self.document_boundary,
            )
        ]

    def eval_specs(self) -> list[SourceSpec]:
        """The held-out sources: eval_files read like the training files (eval_share: the training sources)."""
        if self.eval_files:
            return [
                SourceSpec(
                    files=list(self.eval_files),
                    format=self.format,
                    text_field=self.text_field,
                    document_boundary=self.document_boundary,
                )
            ]
        if self.path and self.eval_share:  # the documents held out when the examples were prepared
            return [SourceSpec(files=[str(Path(self.path) / "held_out.jsonl")], format="json", text_field="text")]
        return self.source_specs() if self.eval_share else []


@dataclass
class TokenizerConfig:
    path: str | None = None  # an existing tokenizer folder or vocab.txt; else one is trained on the data
    vocab_size: int = 30522
    lowercase: bool = True
    train_documents: int | None = None  # cap on documents read to train it (None: one pass over the data)
    max_unknown_share: float = 0.2  # of the data's tokens; more [UNK] than this means the tokenizer does not fit

    def __post_init__(self) -> None:
        if self.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"tokenizer.vocab_size must be >= {MIN_VOCAB_SIZE}, got {self.vocab_size}")
        if not 0.0 < self.max_unknown_share <= 1.0:
            raise ValueError(f"tokenizer.max_unknown_share must be in (0, 1], got {self.max_unknown_share}")


@dataclass
class OptimConfig(AdamWConfig):
    """AdamW with the multiplicative warmup x linear decay of GR optimization.py."""

    lr: float = 5e-4
    warmup_steps: int = 10_000  # scaled down to 10% of the run, with a notice, when over half of trainer.max_steps
    warmup_share: float | None = None  # or: warmup as this share of trainer.max_steps (takes precedence)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr < 0 or self.warmup_steps < 0:
            raise ValueError("optim: lr and warmup_steps must be >= 0")
        if self.warmup_share is not None and not 0.0 <= self.warmup_share < 1.0:
            raise ValueError(f"optim.warmup_share must be in [0, 1), got {self.warmup_share}")

    def warmup_for(self, max_steps: int) -> tuple[int, str | None]:
        """The warmup to use, and a notice when it is not the configured `warmup_steps`.

        A warmup over half the run would keep the learning rate far below its peak for most of it (the reference's
        10k steps against a 200-step trial run: 2% of the peak at the end), so it is scaled down to 10% of the run.
        """
        if self.warmup_share is not None:
            return round(self.warmup_share * max_steps), None
        if self.warmup_steps > max_steps // 2:
            scaled = max(1, max_steps // 10)
            return scaled, (
                f"optim.warmup_steps={self.warmup_steps} is over half of trainer.max_steps={max_steps}; "
                f"warming up for {scaled} steps (10% of the run) instead; set optim.warmup_share to choose"
            )
        return self.warmup_steps, None


@dataclass
class TrainerConfig:
    max_steps: int = 1_000_000
    # A compute budget instead: the run ends once it has spent this many training FLOPs (3 x forward, every
    # position of every batch, padding included), and trainer.max_steps becomes the steps that reach it.
    max_flops: float | None = None
    global_batch_size: int = 128  # sequences per optimizer step, over all processes
    micro_batch_size: int | None = None  # per process and forward pass, at most; None: global / processes
    mixed_precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | no | fp16 | bf16
    compile: bool = False  # torch.compile the joint module (inductor, static shapes); docs/scaling.md has figures
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs: small models on GPU) | max-autotune
    keep_freed_memory: bool = True  # on CPU: glibc keeps freed blocks for the next step (allocator.py)
    save_every: int = 1000  # optimizer steps; a checkpoint is also written at the end
    keep_last: int = 3  # resume checkpoints kept
    log_every: int = 10
    eval_every: int = 0  # held-out evaluation every N steps (and at the end); 0: at the end only
    eval_tokens: int = 65_536  # non-pad tokens in the held-out set
    peak_flops: float | None = None  # per process, for MFU in metrics.jsonl (default: the GPU's data sheet)
    max_skips_in_a_row: int = 20  # skipped steps (fp16 overflow, loss spike) tolerated in a row before stopping
    loss_spike_factor: float = 10.0  # a step whose loss exceeds this x its running mean is a spike; 0 turns it off
    loss_spike_action: str = "skip"  # skip (no update, counted) | stop
    # Keys (or prefixes ending in ".") that may differ from the config a run folder was started with, e.g.
    # [trainer.max_steps]; each is named in the log. Keys that never change what is trained are always allowed.
    allow_config_change: list[str] = field(default_factory=list)
    resume_from: str | None = None  # a checkpoint (step_<N> or a path) instead of the newest intact one
    export: bool = True  # write export/discriminator and export/generator at the end

    def __post_init__(self) -> None:
        check_choice("trainer.mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_choice("trainer.loss_spike_action", self.loss_spike_action, SPIKE_ACTIONS)
        check_choice("trainer.compile_mode", self.compile_mode, COMPILE_MODES)
        if self.loss_spike_factor < 0 or 0 < self.loss_spike_factor <= 1:
            raise ValueError(f"trainer.loss_spike_factor must be 0 (off) or > 1, got {self.loss_spike_factor}")
        for name in ("max_steps", "global_batch_size", "save_every", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0 or self.eval_tokens < 1:
            raise ValueError("trainer.eval_every must be >= 0 and trainer.eval_tokens >= 1")
        if self.max_flops is not None and self.max_flops <= 0:
            raise ValueError(f"trainer.max_flops must be > 0, got {self.max_flops}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"trainer.micro_batch_size must be >= 1, got {self.micro_batch_size}")

    def steps_for_budget(self, flops_per_step: float) -> int:
        """trainer.max_steps, or with trainer.max_flops the steps that spend it (the last one may overshoot)."""
        if self.max_flops is None:
            return self.max_steps
        return max(1, math.ceil(self.max_flops / flops_per_step))

    def accumulation_steps(self, num_processes: int) -> int:
        per_process = self.global_batch_size // num_processes
        micro = min(self.micro_batch_size or per_process, per_process)
        if micro < 1 or self.global_batch_size % (micro * num_processes):
            raise ValueError(
                f"trainer.global_batch_size={self.global_batch_size} is not a multiple of "
                f"trainer.micro_batch_size={micro} x {num_processes} processes"
            )
        return self.global_batch_size // (micro * num_processes)

    def micro_batch(self, num_processes: int) -> int:
        return self.global_batch_size // (num_processes * self.accumulation_steps(num_processes))


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output_dir: str = "runs/electra"
    seed: int = 0


def register_configs() -> None:
    """The root schema that configs/pretrain/train.yaml fills, and the shared `logging` group."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_logging_configs()
