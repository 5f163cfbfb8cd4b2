"""ELECTRA with a task head, in transformers' layout: `ElectraForSequenceClassification` (classification and
regression), `ElectraForTokenClassification`, `ElectraForQuestionAnswering` and `ElectraForMultipleChoice`.
`save_pretrained` folders load there with no missing or unexpected keys (config.json carries num_labels, id2label,
label2id, problem_type, and the summary settings of the multiple-choice head).

The sequence head is transformers' `ElectraClassificationHead` on the [CLS] state: dropout, dense H -> H, GELU,
dropout, dense H -> labels. (google-research/electra's own head is dropout and one dense layer; transformers added
the hidden layer, and its layout is what the rest of the ecosystem loads.) The token head is dropout and one dense
layer on every position, as in both. The question-answering head is one dense layer H -> 2 (start, end logits) on
every position; the multiple-choice head transformers' `ElectraSequenceSummary` on [CLS] (dense H -> H, GELU,
dropout) and a dense H -> 1 score per choice.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from electra_pretrain.dropout import Dropout
from electra_pretrain.finetune.batches import IGNORE
from electra_pretrain.model_config import ElectraConfig
from electra_pretrain.modeling import ElectraPreTrainedBase
from electra_pretrain.weights import (
    DISCRIMINATOR_FOLDER,
    GENERATOR_FOLDER,
    MASKED_LM_FOLDER,
    checked_config,
    read_weights,
)

GENERATOR_ARCHITECTURE = "ElectraForMaskedLM"

log = logging.getLogger(__name__)
ENCODER_PREFIX = "electra."


class ElectraClassificationHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, num_labels), from the first ([CLS]) position."""
        x = F.gelu(self.dense(self.dropout(hidden[:, 0])))
        return self.out_proj(self.dropout(x))


class TaskModel(ElectraPreTrainedBase):
    """An encoder and a head; `labels` names the classes in id order, None for regression (one output)."""

    def __init__(
        self,
        config: ElectraConfig,
        labels: list[str] | None,
        classifier_dropout: float | None = None,
        attn_implementation: str = "sdpa",
    ):
        super().__init__(config, attn_implementation)
        self.labels = labels
        self.num_labels = len(labels) if labels else 1
        self.classifier_dropout = classifier_dropout
        self.dropout_p = config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout

    def config_extras(self) -> dict:
        names = self.labels or ["LABEL_0"]
        extras = {
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
            "num_labels": self.num_labels,
            "classifier_dropout": self.classifier_dropout,
        }
        if self.architecture == ElectraForSequenceClassification.architecture:
            extras["problem_type"] = "regression" if self.labels is None else "single_label_classification"
        return extras

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over labelled examples / tokens (IGNORE skipped); mean squared error for regression;
        in fp32 whatever the autocast precision."""
        labels = batch["labels"]
        if self.labels is None:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE)


class ElectraForSequenceClassification(TaskModel):
    architecture = "ElectraForSequenceClassification"

    def __init__(
        self,
        config: ElectraConfig,
        labels: list[str] | None,
        classifier_dropout: float | None = None,
        attn_implementation: str = "sdpa",
    ):
        super().__init__(config, labels, classifier_dropout, attn_implementation)
        self.classifier = ElectraClassificationHead(config.hidden_size, self.num_labels, self.dropout_p)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, num_labels) logits (regression: (B, 1) values)."""
        return self.classifier(self.electra(input_ids, attention_mask, token_type_ids))


class ElectraForTokenClassification(TaskModel):
    architecture = "ElectraForTokenClassification"

    def __init__(
        self,
        config: ElectraConfig,
        labels: list[str] | None,
        classifier_dropout: float | None = None,
        attn_implementation: str = "sdpa",
    ):
        if labels is None:
            raise ValueError("token classification needs tag names")
        super().__init__(config, labels, classifier_dropout, attn_implementation)
        self.dropout = Dropout(self.dropout_p)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L, num_labels) logits."""
        return self.classifier(self.dropout(self.electra(input_ids, attention_mask, token_type_ids)))


class ElectraForQuestionAnswering(TaskModel):
    """Extractive QA: start and end logits for every position; no labels (labels=None)."""

    architecture = "ElectraForQuestionAnswering"

    def __init__(
        self,
        config: ElectraConfig,
        labels: list[str] | None = None,
        classifier_dropout: float | None = None,
        attn_implementation: str = "sdpa",
    ):
        super().__init__(config, None, classifier_dropout, attn_implementation)
        self.num_labels = 2
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def config_extras(self) -> dict:
        return {"num_labels": 2, "id2label": {0: "LABEL_0", 1: "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1}}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L, 2): start and end logits."""
        return self.qa_outputs(self.electra(input_ids, attention_mask, token_type_ids))

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean of the start and end positions' cross-entropies (a window without the answer points at [CLS])."""
        start, end = logits.float().unbind(-1)  # (B, L) each
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2


class ElectraForMultipleChoice(TaskModel):
    """One score per choice; inputs are (B, C, L), the choices of each example side by side."""

    architecture = "ElectraForMultipleChoice"

    def __init__(
        self,
        config: ElectraConfig,
        labels: list[str] | None = None,
        classifier_dropout: float | None = None,
        attn_implementation: str = "sdpa",
    ):
        super().__init__(config, None, classifier_dropout, attn_implementation)
        self.sequence_summary = ElectraSequenceSummary(config.hidden_size, config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def config_extras(self) -> dict:
        # transformers' ElectraConfig defaults, written out so that the head is read the same way there
        return {
            "summary_type": "first",
            "summary_use_proj": True,
            "summary_activation": "gelu",
            "summary_last_dropout": self.sequence_summary.dropout.p,
            "num_labels": 2,
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, C, L) -> (B, C) scores."""
        batch, choices, length = input_ids.shape
        flat = [None if t is None else t.reshape(batch * choices, length) for t in (attention_mask, token_type_ids)]
        hidden = self.electra(input_ids.reshape(batch * choices, length), *flat)
        return self.classifier(self.sequence_summary(hidden)).view(batch, choices)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class ElectraSequenceSummary(nn.Module):
    """transformers' summary with ELECTRA's settings: the first ([CLS]) state, dense H -> H, GELU, dropout."""

    def __init__(self, hidden_size: int, dropout: float):
        super().__init__()
        self.summary = nn.Linear(hidden_size, hidden_size)
        self.dropout = Dropout(dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.gelu(self.summary(hidden[:, 0])))


def model_folder(path: str | Path) -> Path:
    """An export root of this project (its discriminator/, or the masked-LM baseline's mlm/) or a model folder
    itself (path/config.json)."""
    path = Path(path)
    for name in (DISCRIMINATOR_FOLDER, MASKED_LM_FOLDER):
        if (path / name / "config.json").is_file():
            return path / name
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(
        f"model_path={path}: no config.json there nor in {path / DISCRIMINATOR_FOLDER} or {path / MASKED_LM_FOLDER} "
        "(name an export folder, its discriminator/, or a transformers ELECTRA folder)"
    )


TASK_ARCHITECTURES = {
    model.architecture
    for model in (
        ElectraForSequenceClassification,
        ElectraForTokenClassification,
        ElectraForQuestionAnswering,
        ElectraForMultipleChoice,
    )
}


def check_start(folder: Path, from_fine_tuned: bool) -> dict:
    """What model_path holds, refused where it is not what fine-tuning should start from: the generator half of an
    ELECTRA export (its discriminator is the encoder to fine-tune), or, unless `from_fine_tuned`, a model already
    fine-tuned on a task. Returns {"architecture", "fine_tuned"} for results.json."""
    architectures = ElectraConfig.architectures(folder)
    if (
        GENERATOR_ARCHITECTURE in architectures
        and folder.name == GENERATOR_FOLDER
        and (folder.parent / DISCRIMINATOR_FOLDER / "config.json").is_file()
    ):
        raise ValueError(
            f"model_path={folder} is the generator of an ELECTRA pair; fine-tune its discriminator "
            f"(model_path={folder.parent})"
        )
    task = [a for a in architectures if a in TASK_ARCHITECTURES]
    if task and not from_fine_tuned:
        raise ValueError(
            f"model_path={folder} holds a model fine-tuned as {task[0]}; to start from it (its encoder; "
            "the head is new) set from_fine_tuned=true, which results.json records, since scores "
            "started this way are not comparable with scores started from a pretrained model"
        )
    return {"architecture": architectures[0] if architectures else "unknown", "fine_tuned": bool(task)}


def build_task_model(
    model_class: type[TaskModel],
    folder: Path,
    tokenizer: Tokenizer,
    labels: list[str] | None,
    classifier_dropout: float | None,
    attn_implementation: str,
    pretrained: bool,
    verify: bool = True,
) -> TaskModel:
    """The task model shaped by folder/config.json; its encoder's weights loaded from the folder when `pretrained`
    (the head is always new). The folder's other weights (a pretraining or an earlier task head) are left out and
    named in the log."""
    model = model_class(checked_config(folder, tokenizer), labels, classifier_dropout, attn_implementation)
    if not pretrained:
        return model
    weights = read_weights(folder, verify)
    encoder = {
        k: v for k, v in weights.items() if k.startswith(ENCODER_PREFIX) and not k.endswith("position_ids")
    }  # position_ids: a buffer
    head = {k: v for k, v in model.state_dict().items() if not k.startswith(ENCODER_PREFIX)}
    model.load_weights({**encoder, **head}, str(folder))  # strict: missing, unexpected, misshaped keys are named
    left_out = sorted({k.split(".")[0] for k in weights if not k.startswith(ENCODER_PREFIX)})
    if left_out:
        log.info("%s: encoder loaded; not used: %s (the head here is new)", folder, ", ".join(left_out))
    return model
