"""ELECTRA pretraining examples from documents, after google-research/electra build_pretraining_dataset.py.

A document is cut into sentence-like units (each line, further cut after . ! ? and at most max_seq_length - 3
tokens long). Units are packed into `[CLS] A [SEP] B [SEP]` examples that never cross a document:
- an example is emitted once its units reach the target length (max_seq_length, or 5% of the time a random length
  in [5, max_seq_length]) or the document ends;
- 10% of examples have a single segment; otherwise the first segment aims at (L - 3) // 2 tokens and takes the unit
  that would overshoot it half of the time;
- unlike the original, tokens trimmed off an over-long example are carried into the next one, not dropped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from tokenizers import Tokenizer

from electra_pretrain.tokenizer import token_id

# A sentence ends at . ! ? (possibly followed by closing quotes or brackets) before whitespace.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u201d\u2019)\]])\s+")
SINGLE_SEGMENT_SHARE = 0.1  # GR: "small chance to only have one segment as in classification tasks"
RANDOM_LENGTH_SHARE = 0.05  # GR: "small chance for random-length instead of max_length-length example"
MIN_RANDOM_LENGTH = 5


@dataclass
class Example:
    input_ids: list[int]  # [CLS] A [SEP] (B [SEP]), at most max_seq_length ids
    num_first: int  # length of [CLS] A [SEP]: token_type_ids are 0 there and 1 after


def sentence_units(text: str) -> list[str]:
    units: list[str] = []
    for line in text.split("\n"):
        units.extend(part for part in SENTENCE_END.split(line.strip()) if part)
    return units


class ExampleBuilder:
    """Turns one document at a time into examples; all randomness comes from the `rng` it is given."""

    def __init__(self, tokenizer: Tokenizer, max_seq_length: int, rng: random.Random):
        if max_seq_length < MIN_RANDOM_LENGTH:
            raise ValueError(f"data.max_seq_length must be >= {MIN_RANDOM_LENGTH}, got {max_seq_length}")
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.rng = rng
        self.cls_id = token_id(tokenizer, "[CLS]")
        self.sep_id = token_id(tokenizer, "[SEP]")
        self.target_length = max_seq_length  # carries over between documents, as in GR

    def tokenize_units(self, text: str) -> list[list[int]]:
        """Token ids of each sentence-like unit, units longer than L - 3 cut into pieces of L - 3."""
        limit = self.max_seq_length - 3
        pieces: list[list[int]] = []
        for encoding in self.tokenizer.encode_batch(sentence_units(text), add_special_tokens=False):
            ids = encoding.ids  # may be empty: a unit of control characters only
            pieces.extend(ids[i : i + limit] for i in range(0, len(ids), limit))
        return pieces

    def document_examples(self, text: str) -> Iterator[Example]:
        sentences: list[list[int]] = []
        length = 0
        for unit in self.tokenize_units(text):
            sentences.append(unit)
            length += len(unit)
            while length >= self.target_length:
                example, sentences = self._create_example(sentences)
                length = sum(map(len, sentences))
                yield example
        while sentences:
            example, sentences = self._create_example(sentences)
            yield example

    def _create_example(self, sentences: list[list[int]]) -> tuple[Example, list[list[int]]]:
        """One example from the front of `sentences`; returns it and the tokens left for the next one."""
        max_length = self.max_seq_length
        if self.rng.random() < SINGLE_SEGMENT_SHARE:
            first_target = 100_000
        else:
            first_target = (self.target_length - 3) // 2
        first: list[int] = []
        second: list[int] = []
        for sentence in sentences:
            if (
                not first
                or len(first) + len(sentence) < first_target
                or (not second and len(first) < first_target and self.rng.random() < 0.5)
            ):
                first += sentence
            else:
                second += sentence
        # Trim to max_seq_length counting [CLS]/[SEP] (GR trims to the maximum, not the target); what is cut off
        # starts the next example.
        first, first_rest = first[: max_length - 2], first[max_length - 2 :]
        keep_second = max(0, max_length - len(first) - 3)
        second, second_rest = second[:keep_second], second[keep_second:]
        leftover = first_rest + second_rest
        if self.rng.random() < RANDOM_LENGTH_SHARE:
            self.target_length = self.rng.randint(MIN_RANDOM_LENGTH, max_length)
        else:
            self.target_length = max_length
        ids = [self.cls_id, *first, self.sep_id]
        num_first = len(ids)
        if second:
            ids += [*second, self.sep_id]
        return Example(ids, num_first), ([leftover] if leftover else [])
