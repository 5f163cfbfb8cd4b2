"""Task kinds: one strategy object per kind of fine-tuning task (base.py says what a kind does)."""

from __future__ import annotations

from electra_pretrain.finetune.config import TaskConfig
from electra_pretrain.finetune.kinds.base import Prediction, TaskKind
from electra_pretrain.finetune.kinds.classification import Classification
from electra_pretrain.finetune.kinds.multiple_choice import MultipleChoice
from electra_pretrain.finetune.kinds.question_answering import QuestionAnswering
from electra_pretrain.finetune.kinds.regression import Regression
from electra_pretrain.finetune.kinds.token_classification import TokenClassification

KINDS: dict[str, type[TaskKind]] = {
    kind.name: kind for kind in (Classification, Regression, TokenClassification, QuestionAnswering, MultipleChoice)
}


def task_kind(task: TaskConfig) -> TaskKind:
    """The strategy object of task.kind (config.TASK_KINDS names the same kinds)."""
    return KINDS[task.kind](task)


__all__ = ["KINDS", "Prediction", "TaskKind", "task_kind"]
