"""Deterministic WordPiece vocabulary training: tokenizers' WordPieceTrainer merge rule, ties broken by text.

Why not `tokenizers.trainers.WordPieceTrainer` itself: it numbers the "##" continuation symbols in hash order and
breaks ties between equally frequent merges by those numbers, so two trainings on the same text give vocabularies
in a different order and, at the vocabulary's edge, with different tokens (measured: 4 of 4 trainings of an
8000-token vocabulary on 60 SOTU addresses differed). The same command must give the same model, so the merges are
chosen here, in the same way (the most frequent adjacent pair of symbols, "##"-prefixed inside a word, at least
`min_frequency` times) but with ties broken by the symbols' text. Normalisation, pre-tokenisation and the
WordPiece model that tokenizes stay tokenizers'.

Speed (docs/performance.md, "Tokenizer training"): words are counted as whitespace-separated chunks with str.split
and Counter (C loops), and only each distinct chunk goes through tokenizers' normaliser and pre-tokeniser, in
batches; symbols and pairs are integers, so the merge loop's heap compares plain ints. Ties between equally frequent
pairs are broken by the symbols' ids: the alphabet's in text order, then merged pieces in the order they were learnt
(what tokenizers does, with ids that do not depend on hash order).

Words longer than `MAX_WORD_CHARS` characters (the original's WordPiece limit, google-research/electra
`tokenization.py`, `max_input_chars_per_word=200`) are [UNK] when tokenizing, so they are left out of training:
a 20 MB line without spaces costs one dictionary entry check, not quadratic time in the merges.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer
from tqdm.auto import tqdm

MAX_WORD_CHARS = 200
PREFIX = "##"
# Characters that str.split() treats as whitespace but BERT's normaliser removes as control characters (so "a\x1fb"
# is one word there): removed before splitting, as the normaliser would.
_CONTROL_SPACES = {ord(c): None for c in "\x0b\x0c\x1c\x1d\x1e\x1f\x85"}
_NORMALIZE_BATCH = 4096  # distinct chunks per call into the normaliser
_PAIR_BITS = 24  # a pair of symbol ids as one int: first << 24 | second (up to 16.7 M symbols)
_PAIR_MASK = (1 << 2 * _PAIR_BITS) - 1


def count_words(
    texts: Iterable[str], tokenizer: Tokenizer, show_progress: bool = True, total: int | None = None
) -> tuple[Counter[str], int]:
    """Word counts after the tokenizer's normaliser and pre-tokeniser; returns (counts, words over the limit).

    The normaliser and the pre-tokeniser only ever split at whitespace, never join across it, so the words of a
    text are the words of its whitespace-separated chunks: each distinct chunk is normalised and pre-tokenised once.
    """
    chunks: Counter[str] = Counter()
    for text in tqdm(
        texts, desc="tokenizer: counting words", unit=" docs", total=total, disable=not show_progress, mininterval=2.0
    ):
        chunks.update(text.translate(_CONTROL_SPACES).split())
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    counts: Counter[str] = Counter()
    too_long = 0
    plain = [chunk for chunk in chunks if chunk.isascii() and chunk.isalnum()]  # one word each, no punctuation
    for start in range(0, len(plain), _NORMALIZE_BATCH):
        batch = plain[start : start + _NORMALIZE_BATCH]
        words = normalizer.normalize_str(" ".join(batch)).split(" ")
        if len(words) != len(batch):  # a normaliser that does not keep ASCII letters and digits one for one
            words = [normalizer.normalize_str(chunk) for chunk in batch]
        for chunk, word in zip(batch, words):
            if len(word) <= MAX_WORD_CHARS:
                counts[word] += chunks[chunk]
            else:
                too_long += chunks[chunk]
    for chunk, count in chunks.items():
        if chunk.isascii() and chunk.isalnum():
            continue
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(chunk)):
            if len(word) <= MAX_WORD_CHARS:
                counts[word] += count
            else:
                too_long += count
    return counts, too_long


def learn_vocabulary(
    word_counts: Counter[str],
    vocab_size: int,
    special_tokens: Iterable[str],
    min_frequency: int = 2,
    show_progress: bool = True,
) -> list[str]:
    """Special tokens, the alphabet (characters, then "##" characters, each sorted), then merged pieces in
    the order they were learnt, until `vocab_size` tokens or no pair occurs `min_frequency` times."""
    vocab = list(dict.fromkeys(special_tokens))
    ordered = sorted(word_counts)
    # Every character on its own (so a word may start with any character seen), and "##" forms of those seen inside
    # a word: tokenizers' alphabet.
    firsts = {c for word in ordered for c in word}
    continuations = {PREFIX + c for word in ordered for c in word[1:]}
    vocab += sorted(firsts - set(vocab)) + sorted(continuations - set(vocab))
    symbol_id = {token: i for i, token in enumerate(vocab)}
    words = [[symbol_id[word[0]], *[symbol_id[PREFIX + c] for c in word[1:]]] for word in ordered]
    counts = [word_counts[word] for word in ordered]

    pair_counts: dict[int, int] = {}
    where: dict[int, list[int]] = {}
    for index, (symbols, count) in enumerate(zip(words, counts)):
        for first, second in zip(symbols, symbols[1:]):
            pair = first << _PAIR_BITS | second
            pair_counts[pair] = pair_counts.get(pair, 0) + count
            where.setdefault(pair, []).append(index)
    # A min-heap of ints: the highest count first, then the smallest pair of ids. An entry may overstate its pair's
    # count (counts fall as merges take symbols away); it is checked when popped and pushed back with the true one.
    heap = [_entry(count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    progress = tqdm(
        total=max(0, vocab_size - len(vocab)), desc="tokenizer: merges", disable=not show_progress, mininterval=2.0
    )
    while len(vocab) < vocab_size and heap:
        count, pair = _unpack(heapq.heappop(heap))
        current = pair_counts.get(pair, 0)
        if current != count:
            if current > 0:
                heapq.heappush(heap, _entry(current, pair))
            continue
        if count < min_frequency:
            break
        first, second = pair >> _PAIR_BITS, pair & ((1 << _PAIR_BITS) - 1)
        text = vocab[first] + vocab[second][len(PREFIX) :]
        merged = symbol_id.get(text)
        if merged is None:
            merged = symbol_id[text] = len(vocab)
            vocab.append(text)
            progress.update(1)
        grown: set[int] = set()  # pairs with the merged symbol: the only ones whose counts can rise
        for index in dict.fromkeys(where.pop(pair)):
            symbols = words[index]
            new = _merge(symbols, first, second, merged)
            if new is None:
                continue  # the pair left this word through an earlier merge
            count = counts[index]
            for a, b in zip(symbols, symbols[1:]):
                key = a << _PAIR_BITS | b
                pair_counts[key] -= count
            for a, b in zip(new, new[1:]):
                key = a << _PAIR_BITS | b
                pair_counts[key] = pair_counts.get(key, 0) + count
                if a == merged or b == merged:
                    grown.add(key)
                    where.setdefault(key, []).append(index)
            words[index] = new
        pair_counts.pop(pair, None)
        for key in sorted(grown):
            if pair_counts[key] > 0:
                heapq.heappush(heap, _entry(pair_counts[key], key))
    progress.close()
    return vocab


def _entry(count: int, pair: int) -> int:
    return -(count << 2 * _PAIR_BITS | (_PAIR_MASK - pair))


def _unpack(entry: int) -> tuple[int, int]:
    value = -entry
    return value >> 2 * _PAIR_BITS, _PAIR_MASK - (value & _PAIR_MASK)


def _merge(symbols: list[int], first: int, second: int, merged: int) -> list[int] | None:
    """Replace each occurrence of the pair, left to right; None when there is none."""
    if first not in symbols:
        return None
    out: list[int] = []
    i, found, n = 0, False, len(symbols)
    while i < n:
        if symbols[i] == first and i + 1 < n and symbols[i + 1] == second:
            out.append(merged)
            i += 2
            found = True
        else:
            out.append(symbols[i])
            i += 1
    return out if found else None
