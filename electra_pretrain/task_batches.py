"""Examples -> token ids -> padded batches, for fine-tuning.

Sequences are `[CLS] A [SEP] (B [SEP])` from the tokenizer's own template, truncated to task.max_length by removing
tokens from the longer text one at a time (google-research/electra `_truncate_seq_pair`; tokenizers'
`longest_first`). Token classification labels the first sub-token of each word and ignores the rest (-100, as
transformers does); words cut off by the length limit are counted and reported, never scored. Batches are padded to
their own longest example (dynamic padding); evaluation batches come in length order so that they barely pad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from electra_pretrain.task_data import Example

IGNORE = -100  # label of positions that are not scored (cross_entropy's ignore_index)


@dataclass
class Encoded:
    index: int  # position in its split, to put predictions back in file order
    input_ids: list[int]
    token_type_ids: list[int]
    label: int | float | list[int] | None  # class id, value, or one id per token (IGNORE off first sub-tokens)
    truncated: bool = False  # tokens were cut off at max_length
    first_tokens: list[int] | None = None  # token tasks: the position of each kept word's first sub-token
    words: int = 0  # token tasks: words in the example (more than len(first_tokens) when truncated)


class TaskEncoder:
    def __init__(self, tokenizer: Tokenizer, kind: str, max_length: int, label_names: list[str] | None):
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: truncation is set on it
        self.tokenizer.enable_truncation(max_length, strategy="longest_first")
        self.tokenizer.no_padding()
        self.kind = kind
        self.label_ids = {name: i for i, name in enumerate(label_names)} if label_names else None

    def __call__(self, examples: Sequence[Example]) -> list[Encoded]:
        if self.kind == "token_classification":
            encodings = self.tokenizer.encode_batch([list(e.texts) for e in examples], is_pretokenized=True)
            return [self._tokens(i, e, enc) for i, (e, enc) in enumerate(zip(examples, encodings))]
        inputs = [e.texts[0] if len(e.texts) == 1 else (e.texts[0], e.texts[1]) for e in examples]
        encodings = self.tokenizer.encode_batch(inputs)
        return [Encoded(i, enc.ids, enc.type_ids, self._label(e.label), bool(enc.overflowing))
                for i, (e, enc) in enumerate(zip(examples, encodings))]

    def _label(self, label: str | float | None) -> int | float | None:
        if label is None or self.label_ids is None:
            return label
        return self.label_ids[label]

    def _tokens(self, index: int, example: Example, encoding) -> Encoded:
        first_tokens, previous = [], None
        for position, word in enumerate(encoding.word_ids):
            if word is not None and word != previous:
                first_tokens.append(position)
            previous = word
        labels = None
        if example.label is not None:
            labels = [IGNORE] * len(encoding.ids)
            for word, position in enumerate(first_tokens):
                labels[position] = self.label_ids[example.label[word]]
        return Encoded(index, encoding.ids, encoding.type_ids, labels, bool(encoding.overflowing), first_tokens,
                       len(example.texts))


class TaskDataset(torch.utils.data.Dataset):
    def __init__(self, encoded: list[Encoded], by_length: bool = False):
        """`by_length`: longest first (evaluation: fewer pad tokens, and an out-of-memory error comes at once)."""
        self.encoded = sorted(encoded, key=lambda e: -len(e.input_ids)) if by_length else encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> Encoded:
        return self.encoded[i]


class Collate:
    """Pads a list of Encoded to the batch's longest: input_ids, attention_mask, token_type_ids (B, L), index (B,),
    and labels (B,) or (B, L) when the examples have them."""

    def __init__(self, pad_id: int, regression: bool):
        self.pad_id = pad_id
        self.regression = regression

    def __call__(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        length = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), length), self.pad_id, dtype=torch.long)
        types = torch.zeros((len(batch), length), dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, e in enumerate(batch):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids)
            types[row, :n] = torch.tensor(e.token_type_ids)
            mask[row, :n] = 1
        out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
               "index": torch.tensor([e.index for e in batch])}
        if all(e.label is not None for e in batch):
            if isinstance(batch[0].label, list):
                labels = torch.full((len(batch), length), IGNORE, dtype=torch.long)
                for row, e in enumerate(batch):
                    labels[row, :len(e.label)] = torch.tensor(e.label)
                out["labels"] = labels
            else:
                out["labels"] = torch.tensor([e.label for e in batch],
                                             dtype=torch.float32 if self.regression else torch.long)
        return out
