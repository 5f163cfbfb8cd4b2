"""Extractive question answering (SQuAD 1.1 and 2.0): `ElectraForQuestionAnswering`, start and end logits over the
context, the official exact match and F1.

Reading: SQuAD JSON (`{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers",
"is_impossible"}]}]}]}`) as the official files are, or json / jsonl / parquet records with `question`, `context`,
`answers` ({`text`: [...], `answer_start`: [...]}) and `id`, as the hub's squad datasets have.

Encoding (transformers' run_qa): the question cut to task.max_query_length tokens, then `[CLS] question [SEP]
context window [SEP]` windows of task.max_length tokens over a long context, consecutive windows sharing
task.doc_stride tokens. A training window whose context does not hold the whole (first) answer, or an unanswerable
question, points both positions at [CLS].

Predictions (transformers' utils_qa.postprocess_qa_predictions): in every window of an example, the
task.n_best_size best start and end logits give the candidate spans inside the context, at most
task.max_answer_length tokens long; the best by start + end logit is the answer. With task.allow_no_answer (SQuAD
2.0) the answer is "" when the smallest null score ([CLS] start + end) over the windows exceeds the best span's
score by more than task.no_answer_threshold; that difference is the example's no-answer score, from which the
best threshold on these examples is chosen as the official v2.0 evaluation does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tokenizers import Encoding, Tokenizer

from electra_pretrain.finetune.batches import Feature, pad
from electra_pretrain.finetune.kinds.base import Prediction, TaskKind
from electra_pretrain.finetune.metrics import squad_scores
from electra_pretrain.finetune.models import ElectraForQuestionAnswering
from electra_pretrain.finetune.readers import TaskExample, check_utf8, field_of


@dataclass
class AnswerFeature(Feature):
    """One window; `label` is (start token, end token) of the answer, (0, 0) when the window does not hold it."""

    offsets: tuple[tuple[int, int] | None, ...] = ()  # each token's character span in the context (None: not context)


class QuestionAnswering(TaskKind):
    name = "question_answering"
    model_class = ElectraForQuestionAnswering
    unit = "windows"

    def needed_fields(self) -> list[str]:
        return [self.task.question_field, self.task.context_field]

    def hub_label_field(self) -> str:
        return self.task.answers_field

    def read_file(self, path: Path, fmt: str, split: str) -> list[TaskExample]:
        if fmt in ("squad", "json") and path.suffix.lower() == ".json":
            check_utf8(path)
            with open(path, encoding="utf-8") as f:
                try:
                    document = json.load(f)
                except json.JSONDecodeError as error:
                    if fmt == "squad":
                        raise ValueError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
                    document = None  # json lines in a .json file: read as records below
            if isinstance(document, dict) and "data" in document:
                return self.from_squad(document, split, str(path))
            if fmt == "squad":
                raise ValueError(f"{path}: not a SQuAD file (no top-level 'data' list)")
        return super().read_file(path, "json" if fmt == "squad" else fmt, split)

    def from_squad(self, document: dict, split: str, source: str) -> list[TaskExample]:
        rows = []
        for article in document["data"]:
            for paragraph in article.get("paragraphs", []):
                for qa in paragraph.get("qas", []):
                    answers = qa.get("answers", [])
                    rows.append(
                        {
                            self.task.id_field: qa.get("id"),
                            self.task.question_field: qa.get("question"),
                            self.task.context_field: paragraph.get("context"),
                            self.task.answers_field: {
                                "text": [a["text"] for a in answers],
                                "answer_start": [a["answer_start"] for a in answers],
                            },
                            "is_impossible": qa.get("is_impossible", False),
                        }
                    )
        return self.from_rows(rows, split, source)

    def from_rows(
        self, rows: list[dict], split: str, source: str, hub_names: list[str] | None = None
    ) -> list[TaskExample]:
        task, examples = self.task, []
        for i, row in enumerate(rows):
            where = f"{source}:{i + 1}"
            question = str(field_of(row, task.question_field, where, "task.question_field"))
            context = str(field_of(row, task.context_field, where, "task.context_field"))
            answers = row.get(task.answers_field)
            label = None
            if answers is not None:
                texts, starts = answers.get("text", []), answers.get("answer_start", [])
                if len(texts) != len(starts):
                    raise ValueError(f"{where}: {len(texts)} answer texts but {len(starts)} answer starts")
                label = [(str(t), int(s)) for t, s in zip(texts, starts)]
                for text, start in label:
                    if context[start : start + len(text)] != text:
                        raise ValueError(f"{where}: the answer {text!r} is not at character {start} of the context")
                if not label and not task.allow_no_answer and split != "test":
                    raise ValueError(
                        f"{where}: a question without an answer; for SQuAD 2.0 set "
                        "task.allow_no_answer=true (task=squad_v2)"
                    )
            elif split != "test":
                raise ValueError(f"{where}: no {task.answers_field!r} field (task.answers_field)")
            example_id = row.get(task.id_field)
            examples.append(
                TaskExample((question, context), label, where, None if example_id is None else str(example_id))
            )
        ids = [e.id for e in examples if e.id is not None]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{source}: question ids repeat; the predictions file is keyed by them")
        return examples

    def encode(self, examples: Sequence[TaskExample], tokenizer: Tokenizer) -> list[Feature]:
        task = self.task
        room = task.max_length - 3  # [CLS] q [SEP] c [SEP]
        if task.max_query_length + task.doc_stride >= room:
            raise ValueError(
                f"task.max_length={task.max_length} leaves no room for windows: it must exceed "
                f"task.max_query_length={task.max_query_length} + task.doc_stride={task.doc_stride} + 3"
            )
        questions = Tokenizer.from_str(tokenizer.to_str())
        questions.no_truncation()
        questions.no_padding()
        pairs = Tokenizer.from_str(tokenizer.to_str())
        pairs.enable_truncation(task.max_length, stride=task.doc_stride, strategy="only_second")
        pairs.no_padding()
        features: list[Feature] = []
        for index, example in enumerate(examples):
            question, context = example.texts
            question = cut_question(questions, question, task.max_query_length)
            encoding = pairs.encode(question, context)
            for window in windows(encoding):
                offsets = tuple(
                    span if sequence == 1 else None for span, sequence in zip(window.offsets, window.sequence_ids)
                )
                label = None if example.label is None else answer_positions(example.label, offsets)
                features.append(AnswerFeature(len(features), index, window.ids, window.type_ids, label, False, offsets))
        return features

    def truncated(self, features: list) -> int:
        """Windows beyond each example's first (nothing of a context is cut)."""
        return len(features) - len({f.example for f in features})

    def collate(self, pad_id: int) -> Callable[[list], dict[str, torch.Tensor]]:
        def collate(batch: list[AnswerFeature]) -> dict[str, torch.Tensor]:
            ids = pad([f.input_ids for f in batch], pad_id)
            out = {
                "input_ids": ids,
                "attention_mask": pad([[1] * len(f) for f in batch], 0, ids.shape[1]),
                "token_type_ids": pad([f.token_type_ids for f in batch], 0, ids.shape[1]),
                "index": torch.tensor([f.index for f in batch]),
            }
            if all(f.label is not None for f in batch):
                out["start_positions"] = torch.tensor([f.label[0] for f in batch])
                out["end_positions"] = torch.tensor([f.label[1] for f in batch])
            return out

        return collate

    def batch_outputs(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> torch.Tensor:
        # (B, L, 2) start and end logits, padded to one length over processes for the gather; positions past a
        # window's end are never read (its offsets stop there)
        return accelerator.pad_across_processes(logits.float(), dim=1, pad_index=-1e4)

    def predictions(self, examples: list[TaskExample], features: list, outputs: list) -> list[Prediction]:
        by_example: dict[int, list[tuple[AnswerFeature, Any]]] = {}
        for feature, output in zip(features, outputs):
            by_example.setdefault(feature.example, []).append((feature, output))
        task, predictions = self.task, []
        for index, example in enumerate(examples):
            context = example.texts[1]
            best, null = None, None
            for feature, output in by_example.get(index, []):
                starts = [pair[0] for pair in output[: len(feature.offsets)]]
                ends = [pair[1] for pair in output[: len(feature.offsets)]]
                window_null = starts[0] + ends[0]
                null = window_null if null is None else min(null, window_null)
                for span in best_spans(starts, ends, feature.offsets, task.n_best_size, task.max_answer_length):
                    if best is None or span[0] > best[0]:
                        best = span
            text = context[best[1] : best[2]] if best is not None else ""
            details: dict[str, Any] = {}
            if task.allow_no_answer:
                score_difference = (null if null is not None else 0.0) - (best[0] if best is not None else -1e9)
                details = {"best_span": text, "no_answer_score": round(score_difference, 6)}
                if best is None or score_difference > task.no_answer_threshold:
                    text = ""
            predictions.append(Prediction(text, details))
        return predictions

    def score(self, examples: list[TaskExample], predictions: list[Prediction]) -> dict[str, float]:
        golds = [[text for text, _ in e.label] for e in examples]
        answers = [p.value for p in predictions]
        no_answer = [p.details["no_answer_score"] for p in predictions] if self.task.allow_no_answer else None
        scores = squad_scores(golds, answers, no_answer)
        return {name: scores[name] for name in self.task.metrics}

    def degenerate(self, predictions: list[Prediction]) -> str | None:
        if len(predictions) > 1 and all(p.value == "" for p in predictions):
            return f"answers none of the {len(predictions)} questions"
        return None

    def prediction_row(self, example: TaskExample, prediction: Prediction) -> dict:
        row: dict = {"id": example.id, "question": example.texts[0]}
        if example.label is not None:
            row["answers"] = [text for text, _ in example.label]
        return {**row, "prediction": prediction.value, **prediction.details}


def cut_question(tokenizer: Tokenizer, question: str, max_tokens: int) -> str:
    """The question's start that tokenizes to at most `max_tokens` tokens (google-research/electra keeps 64)."""
    encoding = tokenizer.encode(question, add_special_tokens=False)
    if len(encoding.ids) <= max_tokens:
        return question
    return question[: encoding.offsets[max_tokens - 1][1]]


def windows(encoding: Encoding) -> list[Encoding]:
    """The first window and every overflowing one, in order."""
    found = [encoding]
    for more in encoding.overflowing:
        found += windows(more)
    return found


def answer_positions(answers: list[tuple[str, int]], offsets: Sequence[tuple[int, int] | None]) -> tuple[int, int]:
    """(start token, end token) of the first answer when this window's context holds all of it, else (0, 0)."""
    if not answers:
        return 0, 0
    text, start = answers[0]
    end = start + len(text)
    context = [i for i, span in enumerate(offsets) if span is not None]
    if not context or offsets[context[0]][0] > start or offsets[context[-1]][1] < end:  # type: ignore[index]
        return 0, 0
    first = next(i for i in context if offsets[i][1] > start)  # type: ignore[index]
    last = next(i for i in reversed(context) if offsets[i][0] < end)  # type: ignore[index]
    return first, last


def best_spans(
    starts: list[float],
    ends: list[float],
    offsets: Sequence[tuple[int, int] | None],
    n_best: int,
    max_answer_length: int,
) -> list[tuple[float, int, int]]:
    """(start + end logit, first character, end character) of the valid spans among the n_best starts and ends."""
    top_starts = sorted(range(len(starts)), key=lambda i: starts[i], reverse=True)[:n_best]
    top_ends = sorted(range(len(ends)), key=lambda i: ends[i], reverse=True)[:n_best]
    spans = []
    for s in top_starts:
        for e in top_ends:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            spans.append((starts[s] + ends[e], offsets[s][0], offsets[e][1]))  # type: ignore[index]
    return spans
