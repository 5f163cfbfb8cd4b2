"""Downstream metrics, as GLUE and CoNLL report them (google-research/electra finetune/*_metrics.py).

accuracy; f1 of the positive class (MRPC, QQP); matthews (CoLA); pearson and spearman (STS-B, spearman with
average ranks for ties); for token classification span_f1 / span_precision / span_recall over chunks, as
conlleval counts them (IOB1, IOB2 and IOBES tags; tags without a prefix are read as I-, the IO scheme), and
token_accuracy; SQuAD's exact match and F1 (0-100, as the official script prints them). Every other metric is a
fraction in [-1, 1]; higher is better.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

OUTSIDE = "O"
PUNCTUATION = set(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def accuracy(gold: Sequence, predicted: Sequence) -> float:
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def f1(gold: Sequence, predicted: Sequence, positive) -> float:
    true_pos = sum(g == positive and p == positive for g, p in zip(gold, predicted))
    predicted_pos = sum(p == positive for p in predicted)
    gold_pos = sum(g == positive for g in gold)
    return 2 * true_pos / (predicted_pos + gold_pos) if predicted_pos + gold_pos else 0.0


def matthews(gold: Sequence, predicted: Sequence) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K; the binary MCC for two), 0 when undefined."""
    labels = sorted(set(gold) | set(predicted), key=str)
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted):
        confusion[index[g]][index[p]] += 1
    n = len(gold)
    correct = sum(confusion[i][i] for i in range(len(labels)))
    gold_counts = [sum(row) for row in confusion]
    predicted_counts = [sum(row[j] for row in confusion) for j in range(len(labels))]
    covariance = correct * n - sum(g * p for g, p in zip(gold_counts, predicted_counts))
    scale = math.sqrt((n * n - sum(p * p for p in predicted_counts)) * (n * n - sum(g * g for g in gold_counts)))
    return covariance / scale if scale else 0.0


def pearson(gold: Sequence[float], predicted: Sequence[float]) -> float:
    n = len(gold)
    mean_g, mean_p = sum(gold) / n, sum(predicted) / n
    covariance = sum((g - mean_g) * (p - mean_p) for g, p in zip(gold, predicted))
    scale = math.sqrt(sum((g - mean_g) ** 2 for g in gold) * sum((p - mean_p) ** 2 for p in predicted))
    return covariance / scale if scale else 0.0


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(gold: Sequence[float], predicted: Sequence[float]) -> float:
    return pearson(_ranks(gold), _ranks(predicted))


def _split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") from "B-PER"; ("O", "O") for the outside tag; ("I", "X") for an unprefixed tag X."""
    if tag == OUTSIDE:
        return OUTSIDE, OUTSIDE
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in ("B", "I", "E", "S"):
        return prefix, kind
    return "I", tag


def spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """(start, end exclusive, type) of each chunk, by conlleval's rules for chunk starts and ends."""
    found, start = set(), 0
    previous_prefix, previous_kind = OUTSIDE, OUTSIDE
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, kind = _split_tag(tag)
        if previous_kind != OUTSIDE and (
            kind != previous_kind or prefix in ("B", "S") or previous_prefix in ("E", "S")
        ):
            found.add((start, i, previous_kind))
        if kind != OUTSIDE and (kind != previous_kind or prefix in ("B", "S") or previous_prefix in ("E", "S")):
            start = i
        previous_prefix, previous_kind = prefix, kind
    return found


def span_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    gold_spans = {(s, *span) for s, tags in enumerate(gold) for span in spans(tags)}
    predicted_spans = {(s, *span) for s, tags in enumerate(predicted) for span in spans(tags)}
    correct = len(gold_spans & predicted_spans)
    precision = correct / len(predicted_spans) if predicted_spans else 0.0
    recall = correct / len(gold_spans) if gold_spans else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    tokens = [(g, p) for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps)]
    return {
        "span_f1": f,
        "span_precision": precision,
        "span_recall": recall,
        "token_accuracy": sum(g == p for g, p in tokens) / len(tokens) if tokens else 0.0,
    }


# -- SQuAD, as the official evaluation script (evaluate-v2.0.py, which v1.1 agrees with on answerable questions)
# normalises and scores answers: lower case, no punctuation, no articles, single spaces; the best over the gold
# answers; a question without gold answers is scored against "".


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_exact(gold: str, predicted: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(predicted))


def answer_f1(gold: str, predicted: str) -> float:
    gold_tokens = normalize_answer(gold).split() if gold else []
    predicted_tokens = normalize_answer(predicted).split() if predicted else []
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    same = sum((Counter(gold_tokens) & Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    golds: Sequence[Sequence[str]], predicted: Sequence[str], no_answer: Sequence[float] | None = None
) -> dict[str, float]:
    """exact_match and f1 (0-100) of the predicted answers; with no-answer scores (SQuAD 2.0: higher means more
    likely unanswerable), best_exact_match / best_f1 at the best threshold on these questions and that threshold
    (best_f1_threshold), as the official script's --na-prob-file does. Without them, best_* equal the plain scores."""
    answers = [[g for g in gold if normalize_answer(g)] or [""] for gold in golds]
    exact = [max(answer_exact(g, p) for g in gold) for gold, p in zip(answers, predicted)]
    f1 = [max(answer_f1(g, p) for g in gold) for gold, p in zip(answers, predicted)]
    n = len(exact)
    scores = {"exact_match": 100 * sum(exact) / n, "f1": 100 * sum(f1) / n}
    if no_answer is None:
        return {**scores, "best_exact_match": scores["exact_match"], "best_f1": scores["f1"], "best_f1_threshold": 0.0}
    has_answer = [gold != [""] for gold in answers]
    best_exact, _ = best_threshold(exact, predicted, no_answer, has_answer)
    best_f1, threshold = best_threshold(f1, predicted, no_answer, has_answer)
    return {**scores, "best_exact_match": best_exact, "best_f1": best_f1, "best_f1_threshold": threshold}


def best_threshold(
    scores: Sequence[float], predicted: Sequence[str], no_answer: Sequence[float], has_answer: Sequence[bool]
) -> tuple[float, float]:
    """The official find_best_thresh: answer only the questions whose no-answer score is at most the threshold;
    returns (the best score, 0-100, and its threshold)."""
    current = best = float(sum(not h for h in has_answer))
    threshold = 0.0
    for i in sorted(range(len(scores)), key=lambda i: no_answer[i]):
        if has_answer[i]:
            current += scores[i]
        elif predicted[i]:
            current -= 1
        if current > best:
            best, threshold = current, no_answer[i]
    return 100 * best / len(scores), threshold
