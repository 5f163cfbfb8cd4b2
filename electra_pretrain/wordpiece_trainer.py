"""Deterministic WordPiece vocabulary training: tokenizers' WordPieceTrainer merge rule, ties broken by text.

Why not `tokenizers.trainers.WordPieceTrainer` itself: it numbers the "##" continuation symbols in hash order and
breaks ties between equally frequent merges by those numbers, so two trainings on the same text give vocabularies
in a different order and, at the vocabulary's edge, with different tokens (measured: 4 of 4 trainings of an
8000-token vocabulary on 60 SOTU addresses differed). The same command must give the same model, so the merges are
chosen here, in the same way (the most frequent adjacent pair of symbols, "##"-prefixed inside a word, at least
`min_frequency` times) but with ties broken by the symbols' text. Normalisation, pre-tokenisation and the
WordPiece model that tokenizes stay tokenizers'.

Words longer than `MAX_WORD_CHARS` characters (the original's WordPiece limit, google-research/electra
`tokenization.py`, `max_input_chars_per_word=200`) are [UNK] when tokenizing, so they are left out of training:
a 20 MB line without spaces costs one dictionary entry check, not quadratic time in the merges.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

from tokenizers import Tokenizer
from tqdm.auto import tqdm

MAX_WORD_CHARS = 200
PREFIX = "##"


def count_words(
    texts: Iterable[str], tokenizer: Tokenizer, show_progress: bool = True, total: int | None = None
) -> tuple[Counter[str], int]:
    """Word counts after the tokenizer's normaliser and pre-tokeniser; returns (counts, words over the limit)."""
    counts: Counter[str] = Counter()
    too_long = 0
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    for text in tqdm(
        texts, desc="tokenizer: counting words", unit=" docs", total=total, disable=not show_progress, mininterval=2.0
    ):
        words = [word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        kept = [word for word in words if len(word) <= MAX_WORD_CHARS]
        too_long += len(words) - len(kept)
        counts.update(kept)
    return counts, too_long


def learn_vocabulary(
    word_counts: Counter[str],
    vocab_size: int,
    special_tokens: Iterable[str],
    min_frequency: int = 2,
    show_progress: bool = True,
) -> list[str]:
    """Special tokens, the alphabet (first characters, then "##" characters, each sorted), then merged pieces in
    the order they were learnt, until `vocab_size` tokens or no pair occurs `min_frequency` times."""
    vocab = list(dict.fromkeys(special_tokens))
    words = [list(word[:1]) + [PREFIX + c for c in word[1:]] for word in sorted(word_counts)]
    counts = [word_counts[word] for word in sorted(word_counts)]
    alphabet = {w[0] for w in words} | {s for w in words for s in w[1:]}
    vocab += sorted(s for s in alphabet if not s.startswith(PREFIX) and s not in vocab)
    vocab += sorted(s for s in alphabet if s.startswith(PREFIX) and s not in vocab)
    known = set(vocab)

    pair_counts: defaultdict[tuple[str, str], int] = defaultdict(int)
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, (symbols, count) in enumerate(zip(words, counts)):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += count
            where[pair].add(index)
    # Max-heap on count, then the smallest pair text first; stale entries are skipped when popped.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    progress = tqdm(
        total=max(0, vocab_size - len(vocab)), desc="tokenizer: merges", disable=not show_progress, mininterval=2.0
    )
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue  # stale: the count changed after this entry was pushed
        if -negative < min_frequency:
            break
        merged = pair[0] + pair[1][len(PREFIX) :]
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
            progress.update(1)
        changed: set[tuple[str, str]] = set()
        for index in where.pop(pair):
            symbols, count = words[index], counts[index]
            new = _merge(symbols, pair, merged)
            if new is symbols:
                continue  # the pair left this word through an earlier merge
            for old_pair in zip(symbols, symbols[1:]):
                pair_counts[old_pair] -= count
                changed.add(old_pair)
            for new_pair in zip(new, new[1:]):
                pair_counts[new_pair] += count
                where[new_pair].add(index)
                changed.add(new_pair)
            words[index] = new
        pair_counts.pop(pair, None)
        for other in changed:
            if pair_counts.get(other, 0) > 0:
                heapq.heappush(heap, (-pair_counts[other], other))
    progress.close()
    return vocab


def _merge(symbols: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    """Replace each occurrence of `pair`, left to right; returns `symbols` itself when there is none."""
    out: list[str] = []
    i, found = 0, False
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(merged)
            i += 2
            found = True
        else:
            out.append(symbols[i])
            i += 1
    return out if found else symbols
