"""BERT-style WordPiece tokenizer: train, load and save with `tokenizers`, in the layout transformers reads.

Special tokens are looked up by name, never assumed: our trained vocabularies put [PAD] [UNK] [CLS] [SEP] [MASK] at
0..4, while google's 30522-token uncased vocab has them at 0, 100, 101, 102, 103.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from electra_pretrain.wordpiece_trainer import MAX_WORD_CHARS, count_words, learn_vocabulary

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Fewer tokens than this is a tokenizer learnt from (next to) no text: an error, never a model trained on it.
MIN_VOCAB_SIZE = 200
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"


def _bert_pipeline(tokenizer: Tokenizer, lowercase: bool) -> Tokenizer:
    """Normaliser, pre-tokeniser, decoder and [CLS] A [SEP] B [SEP] template of BERT / ELECTRA."""
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _add_template(tokenizer: Tokenizer) -> Tokenizer:
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    length: int | None = None,
    show_progress: bool = True,
) -> Tokenizer:
    """Train WordPiece from an iterator of strings (a stream is fine: only word counts are held in memory).

    The same texts always give the same vocabulary in the same order (wordpiece_trainer.py says why the merges are
    not left to tokenizers' trainer). `length` is the number of texts, for the progress bar only.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"tokenizer vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    pipeline = _bert_pipeline(Tokenizer(WordPiece(unk_token="[UNK]")), lowercase)
    word_counts, too_long = count_words(texts, pipeline, show_progress, total=length)
    vocab = learn_vocabulary(word_counts, vocab_size, SPECIAL_TOKENS, min_frequency, show_progress)
    if too_long:
        log.info(
            "tokenizer: %d words longer than %d characters left out (they tokenize to [UNK])", too_long, MAX_WORD_CHARS
        )
    return _from_vocabulary({token: i for i, token in enumerate(vocab)}, lowercase)


def from_vocab(vocab_file: str | Path, lowercase: bool = True) -> Tokenizer:
    vocab: dict[str, int] = {}
    try:
        with open(vocab_file, encoding="utf-8") as f:
            for index, line in enumerate(f):
                token = line.rstrip("\n")
                if token:
                    vocab.setdefault(token, index)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{vocab_file}: not a vocabulary file (invalid UTF-8 at byte {error.start}); expected one token per line"
        ) from None
    if not vocab:
        raise ValueError(f"{vocab_file}: empty vocabulary")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"{vocab_file}: vocabulary lacks the special tokens {missing}")
    return _from_vocabulary(vocab, lowercase)


def _from_vocabulary(vocab: dict[str, int], lowercase: bool) -> Tokenizer:
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS))
    return _add_template(_bert_pipeline(tokenizer, lowercase))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load from a folder (tokenizer.json, else vocab.txt) or a vocab.txt file."""
    path = Path(path)
    if path.is_file():
        return from_vocab(path, lowercase=_lowercase_setting(path.parent))
    if (path / TOKENIZER_FILE).is_file():
        try:
            tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        except Exception as error:  # tokenizers raises a bare Exception for any malformed file
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(f"{path / TOKENIZER_FILE}: not a tokenizer file this version reads ({first})") from None
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"{path / TOKENIZER_FILE}: vocabulary lacks the special tokens {missing}")
        return tokenizer
    if (path / VOCAB_FILE).is_file():
        return from_vocab(path / VOCAB_FILE, lowercase=_lowercase_setting(path))
    raise FileNotFoundError(
        f"{path}: no tokenizer.json or vocab.txt (tokenizer.path must name a tokenizer folder or a vocab.txt file)"
    )


def _lowercase_setting(directory: Path) -> bool:
    config = directory / "tokenizer_config.json"
    if config.is_file():
        return bool(json.loads(config.read_text()).get("do_lower_case", True))
    return True


def is_lowercase(tokenizer: Tokenizer) -> bool:
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return bool(normalizer.get("lowercase", False))


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path, model_max_length: int = 512) -> None:
    """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json (transformers layout)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / TOKENIZER_FILE))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (directory / VOCAB_FILE).write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    specials = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    config = {
        "tokenizer_class": "ElectraTokenizer",
        "do_lower_case": is_lowercase(tokenizer),
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": True,
        **specials,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def token_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a token the vocabulary must have (the special tokens are checked when a tokenizer is loaded)."""
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ValueError(f"the tokenizer's vocabulary has no {token} token")
    return found


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """{'pad': id, 'unk': id, 'cls': id, 'sep': id, 'mask': id} looked up by token name."""
    return {name.strip("[]").lower(): token_id(tokenizer, name) for name in SPECIAL_TOKENS}
