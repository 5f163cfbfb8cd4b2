"""ELECTRA with a task head, in transformers' layout: `ElectraForSequenceClassification` (classification and
regression) and `ElectraForTokenClassification`. `save_pretrained` folders load there with no missing or unexpected
keys (config.json carries num_labels, id2label, label2id, problem_type).

The sequence head is transformers' `ElectraClassificationHead` on the [CLS] state: dropout, dense H -> H, GELU,
dropout, dense H -> labels. (google-research/electra's own head is dropout and one dense layer; transformers added
the hidden layer, and its layout is what the rest of the ecosystem loads.) The token head is dropout and one dense
layer on every position, as in both.
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
from electra_pretrain.weights import DISCRIMINATOR_FOLDER, MASKED_LM_FOLDER, checked_config, read_weights

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


def build_task_model(
    model_class: type[TaskModel],
    folder: Path,
    tokenizer: Tokenizer,
    labels: list[str] | None,
    classifier_dropout: float | None,
    attn_implementation: str,
    pretrained: bool,
) -> TaskModel:
    """The task model shaped by folder/config.json; its encoder's weights loaded from the folder when `pretrained`
    (the head is always new). The folder's other weights (a pretraining or an earlier task head) are left out and
    named in the log."""
    model = model_class(checked_config(folder, tokenizer), labels, classifier_dropout, attn_implementation)
    if not pretrained:
        return model
    weights = read_weights(folder)
    encoder = {
        k: v for k, v in weights.items() if k.startswith(ENCODER_PREFIX) and not k.endswith("position_ids")
    }  # position_ids: a buffer
    head = {k: v for k, v in model.state_dict().items() if not k.startswith(ENCODER_PREFIX)}
    model.load_weights({**encoder, **head}, str(folder))  # strict: missing, unexpected, misshaped keys are named
    left_out = sorted({k.split(".")[0] for k in weights if not k.startswith(ENCODER_PREFIX)})
    if left_out:
        log.info("%s: encoder loaded; not used: %s (the head here is new)", folder, ", ".join(left_out))
    return model
