"""Downstream metrics against values worked out by hand (and, for MCC, scikit-learn's documented example)."""

import math

import pytest

from electra_pretrain.finetune.metrics import accuracy, f1, matthews, pearson, span_scores, spans, spearman


def test_classification_metrics():
    assert accuracy(["a", "b", "a", "c"], ["a", "b", "c", "c"]) == 0.75
    assert f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], positive=1) == pytest.approx(2 / 3)
    assert f1([0, 0], [0, 0], positive=1) == 0.0
    assert matthews([1, 1, 1, -1], [1, -1, 1, 1]) == pytest.approx(-1 / 3)  # sklearn's docstring example
    assert matthews([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)
    # three classes: correct 4 of 6, gold counts (2, 2, 2), predicted counts (2, 3, 1)
    assert matthews([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]) == pytest.approx(12 / math.sqrt(22 * 24))
    assert matthews(["a", "a"], ["a", "a"]) == 0.0  # undefined: one class only


def test_correlations_with_ties():
    gold, predicted = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    assert pearson(gold, predicted) == pytest.approx(6 / math.sqrt(60))
    # predicted ranks with ties averaged: 1, 2.5, 4.5, 2.5, 4.5
    assert spearman(gold, predicted) == pytest.approx(7 / math.sqrt(90))


def test_chunks_follow_conlleval_for_iob1_iob2_and_iobes():
    assert spans("B-PER I-PER O B-LOC B-LOC I-LOC".split()) == {(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")}
    assert spans("I-PER I-PER B-PER O I-ORG".split()) == {(0, 2, "PER"), (2, 3, "PER"), (4, 5, "ORG")}  # IOB1
    assert spans("S-PER B-LOC E-LOC E-LOC".split()) == {(0, 1, "PER"), (1, 3, "LOC"), (3, 4, "LOC")}  # IOBES
    assert spans("B-PER I-LOC O".split()) == {(0, 1, "PER"), (1, 2, "LOC")}  # a type change starts a chunk
    assert spans("PER PER O LOC".split()) == {(0, 2, "PER"), (3, 4, "LOC")}  # IO tags


def test_span_scores():
    scores = span_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]])
    assert scores == {"span_f1": 0.5, "span_precision": 0.5, "span_recall": 0.5, "token_accuracy": 0.75}
    assert span_scores([["O", "B-X"]], [["O", "B-X"]])["span_f1"] == 1.0
