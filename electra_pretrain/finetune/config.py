"""Typed fine-tuning configuration (`python finetune.py <overrides>`), validated once before anything is built.

The defaults are google-research/electra's fine-tuning recipe (configure_finetuning.py and the paper's appendix):
layer-wise learning-rate decay 0.8, 10% warmup then linear decay, weight decay 0.01 (not on LayerNorm and biases),
3 epochs, batch 32, length 128, and a learning rate by model size (3e-4 Small, 1e-4 Base, 5e-5 Large).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from electra_pretrain.config_base import MIXED_PRECISIONS, AdamWConfig, check_choice
from electra_pretrain.model_config import ATTN_IMPLEMENTATIONS
from electra_pretrain.tracking import LoggingConfig, register_logging_configs

# Each task kind and the metrics it reports (kinds/ implements one class per kind; a test checks they agree).
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "matthews"),
    "regression": ("pearson", "spearman"),
    "token_classification": ("span_f1", "span_precision", "span_recall", "token_accuracy"),
    # exact_match / f1 as the official SQuAD script prints them (0-100); best_*: at the no-answer threshold chosen
    # on these examples, as the official v2.0 evaluation does
    "question_answering": ("f1", "exact_match", "best_f1", "best_exact_match", "best_f1_threshold"),
    "multiple_choice": ("accuracy",),
}
# auto: by the extension (.txt is CoNLL for token classification, tab-separated for the other kinds); squad: the
# SQuAD JSON layout ({"data": [{"paragraphs": [{"context", "qas": [...]}]}]}), also recognised in .json files
TASK_FORMATS = ("auto", "csv", "tsv", "json", "parquet", "conll", "squad")
MODEL_INITS = ("pretrained", "random")  # random: the same shape freshly initialised, the honest baseline
KEEP = ("best", "last")


@dataclass
class TaskConfig:
    """What is learnt from which files. GLUE presets (configs/finetune/task/) fill the fields and metrics."""

    name: str = "classification"  # a label for logs and results.json
    kind: str = "classification"  # classification | regression | token_classification | question_answering |
    # multiple_choice
    train_files: list[str] = field(default_factory=list)  # files or globs
    validation_files: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)  # predicted; scored too when every row has a label
    # More evaluation sets, by name: scored after each evaluation beside the validation set, which alone selects
    # the kept epoch and seed (MNLI: {validation_mismatched: [dev_mismatched.tsv]}).
    extra_validation_files: dict[str, list[str]] = field(default_factory=dict)
    extra_test_files: dict[str, list[str]] = field(default_factory=dict)  # predicted like test_files
    # GLUE submission files: predictions/<name>.tsv (`index<TAB>prediction`, label names) for each test set given,
    # e.g. {test: MNLI-m, test_mismatched: MNLI-mm} (the GLUE presets name theirs). The three are dict fields: add a
    # key with Hydra's syntax for a new key, +task.extra_validation_files.<name>=[...]
    glue_submission: dict[str, str] = field(default_factory=dict)
    hub: str | None = None  # a hub dataset instead of files (needs network), e.g. glue
    hub_config: str | None = None  # e.g. sst2
    hub_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    format: str = "auto"  # auto (by extension) | csv | tsv | json | parquet | conll
    column_names: list[str] = field(default_factory=list)  # for csv/tsv files whose first line is not a header
    text_fields: list[str] = field(default_factory=lambda: ["text"])  # one field, or two for sentence pairs
    label_field: str = "label"
    labels: list[str] = field(default_factory=list)  # label names in id order; empty: sorted training labels
    positive_label: str = "1"  # the class `f1` is computed for
    tokens_field: str = "tokens"  # token classification from json / parquet: a list of words ...
    tags_field: str = "tags"  # ... and a list of tags of the same length
    conll_token_column: int = 0  # token classification from CoNLL columns
    conll_tag_column: int = -1
    # question answering: SQuAD JSON, or json / parquet records with these fields (answers: {text: [...],
    # answer_start: [...]}, as the hub's squad datasets have)
    question_field: str = "question"
    context_field: str = "context"
    answers_field: str = "answers"
    id_field: str = "id"
    doc_stride: int = 128  # tokens shared by consecutive windows over a long context
    max_query_length: int = 64  # question tokens kept (google-research/electra)
    max_answer_length: int = 30  # tokens in a predicted answer
    n_best_size: int = 20  # start and end candidates considered per window
    allow_no_answer: bool = False  # SQuAD 2.0: questions may have no answer in the context
    no_answer_threshold: float = 0.0  # SQuAD 2.0: predict "" when null score - best span score exceeds it
    # multiple choice (SWAG): a context, an optional start of the ending, and the candidate endings
    endings_fields: list[str] = field(default_factory=list)
    # sentence pairs: train on each pair both ways (the original's option for MRPC and STS-B)
    swap_pairs: bool = False
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])  # the first one selects the kept epoch / seed
    max_length: int = 128  # tokens, [CLS] and [SEP] included; batches are padded to their longest example only
    # Train on a subsample of this many training examples (label-scarce studies): stratified by label, every class
    # present, drawn with task.subsample_seed, or with each run's seed when that is not set.
    max_train_examples: int | None = None
    subsample_seed: int | None = None

    def __post_init__(self) -> None:
        check_choice("task.kind", self.kind, TASK_KINDS)
        check_choice("task.format", self.format, TASK_FORMATS)
        if not self.metrics:
            raise ValueError("task.metrics is empty; name at least one, e.g. task.metrics=[accuracy]")
        for metric in self.metrics:
            check_choice(f"task.metrics ({self.kind})", metric, TASK_KINDS[self.kind])
        if self.kind in ("classification", "regression") and len(self.text_fields) not in (1, 2):
            raise ValueError(f"task.text_fields={list(self.text_fields)}: give one field, or two for sentence pairs")
        if self.kind == "multiple_choice" and len(self.endings_fields) < 2:
            raise ValueError("task.endings_fields: name the fields of at least two candidate endings")
        if self.kind == "multiple_choice" and len(self.text_fields) not in (1, 2):
            raise ValueError(
                f"task.text_fields={list(self.text_fields)}: the context field, and optionally the start of the ending"
            )
        if self.swap_pairs and (self.kind not in ("classification", "regression") or len(self.text_fields) != 2):
            raise ValueError("task.swap_pairs is for sentence-pair classification or regression")
        if self.doc_stride < 1 or self.max_query_length < 1 or self.max_answer_length < 1 or self.n_best_size < 1:
            raise ValueError("task.doc_stride, max_query_length, max_answer_length and n_best_size must be >= 1")
        if self.kind == "regression" and self.labels:
            raise ValueError("task.labels is for classification; a regression task has no label names")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ValueError(f"task.max_train_examples must be >= 1, got {self.max_train_examples}")
        if self.max_length < 8:
            raise ValueError(f"task.max_length must be >= 8, got {self.max_length}")
        if self.hub and (self.train_files or self.validation_files or self.test_files):
            raise ValueError("task: give either task.hub or task.train_files / validation_files, not both")


# Layer-wise decay is the original's for 12 and 24 layers; a 2-layer encoder fine-tuned better without it, from
# random and from pretrained weights alike (the label-efficiency study, docs/pretraining-recipe.md).
SHALLOW_LAYERS = 4


@dataclass
class FinetuneOptimConfig(AdamWConfig):
    lr: float | None = None  # None: by model size, 3e-4 up to width 256 (Small), 1e-4 (Base), 5e-5 from 1024 (Large)
    # lr x decay^(layers + 2 - depth); None: the original's 0.8, 0.9 for Large (width 1024 and up), and off for
    # encoders of up to SHALLOW_LAYERS layers; 1.0 turns it off
    layerwise_lr_decay: float | None = None
    warmup_share: float = 0.1  # of the optimizer steps, then linear decay to 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.layerwise_lr_decay is not None and not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ValueError(f"optim.layerwise_lr_decay must be in (0, 1] (1.0: off), got {self.layerwise_lr_decay}")
        if not 0.0 <= self.warmup_share < 1.0:
            raise ValueError(f"optim.warmup_share must be in [0, 1), got {self.warmup_share}")

    def decay_for(self, hidden_size: int, num_layers: int = 12) -> float:
        if self.layerwise_lr_decay is not None:
            return self.layerwise_lr_decay
        if num_layers <= SHALLOW_LAYERS:
            return 1.0
        return 0.9 if hidden_size >= 1024 else 0.8

    def lr_for(self, hidden_size: int) -> float:
        if self.lr is not None:
            return self.lr
        return 3e-4 if hidden_size <= 256 else 5e-5 if hidden_size >= 1024 else 1e-4


@dataclass
class FinetuneTrainerConfig:
    epochs: int = 3
    max_steps: int | None = None  # optimizer steps instead of epochs (the schedule is sized to them)
    batch_size: int = 32  # examples per optimizer step, over all processes
    micro_batch_size: int | None = None  # per process and forward pass; None: all of the process's share at once
    eval_batch_size: int = 128  # per process
    # evaluate every N optimizer steps and at the end; 0: only at the end; None: after every epoch
    eval_every: int | None = None
    early_stopping_patience: int | None = None  # stop after this many evaluations without a better score
    mixed_precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | no | fp16 | bf16
    # last: each seed's final model (what google-research/electra and transformers report) | best: its best
    # evaluation on the validation set, which makes that set's score optimistic (labelled so in results.json)
    keep: str = "last"
    save_model: bool = True  # write the kept seed's model to output_dir/model (transformers format)

    def __post_init__(self) -> None:
        check_choice("trainer.mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_choice("trainer.keep", self.keep, KEEP)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "micro_batch_size", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"trainer.{name} must be >= 1 (or null), got {value}")
        if self.eval_every is not None and self.eval_every < 0:
            raise ValueError(f"trainer.eval_every must be >= 0 (0: only at the end) or null, got {self.eval_every}")

    def accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches per optimizer step on each process: batch_size / (micro_batch_size x processes)."""
        if self.batch_size % num_processes:
            raise ValueError(f"trainer.batch_size={self.batch_size} is not a multiple of the {num_processes} processes")
        share = self.batch_size // num_processes
        micro = self.micro_batch_size or share
        if share % micro:
            raise ValueError(
                f"trainer.batch_size={self.batch_size} is not a multiple of trainer.micro_batch_size="
                f"{micro} x {num_processes} processes"
            )
        return share // micro


@dataclass
class FinetuneConfig:
    # An export of this project (its root or export/discriminator) or any transformers ELECTRA folder
    # (config.json + model.safetensors, or pytorch_model.bin read with weights_only=True, + tokenizer files).
    model_path: str | None = None
    model_init: str = "pretrained"  # pretrained | random (same shape, fresh weights: the baseline to beat)
    # model_path may name a model fine-tuned on another task (RTE / MRPC / STS-B from MNLI, as some papers do) only
    # with this set: its encoder is used, its head left out, and results.json says so (scores are not comparable)
    from_fine_tuned: bool = False
    tokenizer_path: str | None = None  # default: the model folder's tokenizer
    verify_checksums: bool = True  # check model_path against its checksums.json; false reads a changed folder anyway
    classifier_dropout: float | None = None  # None: the model's hidden_dropout_prob (transformers' rule)
    attn_implementation: str = "sdpa"
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # several runs in one command; empty: [seed]
    output_dir: str = "runs/finetune"

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("model_path is not set; name an export folder, e.g. model_path=runs/demo/export")
        check_choice("model_init", self.model_init, MODEL_INITS)
        check_choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds={list(self.seeds)} repeats a seed")

    def run_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]


def register_finetune_configs() -> None:
    """The root schema that configs/finetune/finetune.yaml fills, and the shared `logging` group."""
    ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)
    register_logging_configs()
