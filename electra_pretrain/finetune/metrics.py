"""Downstream metrics, as GLUE and CoNLL report them (google-research/electra finetune/*_metrics.py).

accuracy; f1 of the positive class (MRPC, QQP); matthews (CoLA); pearson and spearman (STS-B, spearman with
average ranks for ties); for token classification span_f1 / span_precision / span_recall over chunks, as
conlleval counts them (IOB1, IOB2 and IOBES tags; tags without a prefix are read as I-, the IO scheme), and
token_accuracy. Every metric is a fraction in [-1, 1]; higher is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

OUTSIDE = "O"


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
