"""WordPiece training, saving in the transformers layout, loading vocab-only folders."""

import pytest
import transformers

from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer, special_token_ids, train_tokenizer

from .helpers.corpora import WORDS

TRICKY = [
    "Café déjà vu — naïve résumé!",
    "Prices rose 12.5% in 2024, (about $3,400).",
    "東京で会いましょう 你好",
    "Emoji 🙂 and Ωmega zzzqqxyzzy",
    "UPPER lower MiXeD",
    "tabs\tand\u00a0spaces",
]


@pytest.fixture(scope="module")
def trained():
    corpus = [f"{WORDS} café déjà naïve 12.5% 2024 東京 你好"] * 50 + TRICKY * 5
    return train_tokenizer(corpus, vocab_size=300, show_progress=False)


def test_special_tokens_come_first(trained):
    assert special_token_ids(trained) == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def test_uncased_strips_accents_and_splits_cjk(trained):
    tokens = trained.encode("Café DÉJÀ 東京", add_special_tokens=False).tokens
    assert tokens[:2] == ["cafe", "deja"] and tokens[2:] == ["東", "京"]
    assert trained.encode("zzzqqxyzzy ☃", add_special_tokens=False).tokens[-1] == "[UNK]"


def test_pair_template(trained):
    enc = trained.encode("river city", "green garden")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert enc.type_ids == [0] * 4 + [1] * 3


@pytest.mark.parametrize("only_vocab", [False, True])
def test_transformers_loads_our_folder_with_same_ids(tmp_path, trained, only_vocab):
    save_tokenizer(trained, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    if only_vocab:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (tmp_path / name).unlink()
    ours = load_tokenizer(tmp_path)
    theirs = transformers.ElectraTokenizerFast.from_pretrained(tmp_path)
    for text in TRICKY:
        assert theirs(text)["input_ids"] == ours.encode(text).ids == trained.encode(text).ids, text
    assert theirs.mask_token_id == 4 and theirs.pad_token_id == 0


def test_vocab_file_with_bert_layout_ids(tmp_path):
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "river", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = load_tokenizer(tmp_path / "vocab.txt")
    assert special_token_ids(tok) == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert tok.encode("Rivers").ids == [101, 104, 105, 102]


def test_bad_tokenizer_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"vocab.txt: vocabulary lacks the special tokens \['\[PAD\]'"):
        load_tokenizer(tmp_path)


# The trainer's fast paths (distinct chunks, integer pairs, a lazy heap) against the plainest statement of the rule.

AWKWARD = [
    "Café naïve RÉSUMÉ façade, déjà-vu! x\x1fy a\x0bb c\x0cd e\x85f",  # accents; spaces that BERT drops as control
    "東京タワー and 北京, 123abc ABC\u00a0def\u3000ghi\u2028jkl zero\u200bwidth nul\x00byte bad\ufffdbyte",
    "tabs\tand\nnewlines\r\nand   runs of   spaces; (brackets) [more] {and} <so> on... 'quotes' \"too\"",
    "e-mail: someone@example.com, http://example.org/a?b=c&d=e #hash $dollar 50% ^caret ~tilde `tick`",
]


def reference_counts(texts, pipeline):
    from collections import Counter

    from electra_pretrain.wordpiece_trainer import MAX_WORD_CHARS

    counts = Counter()
    for text in texts:
        words = [w for w, _ in pipeline.pre_tokenizer.pre_tokenize_str(pipeline.normalizer.normalize_str(text))]
        counts.update(w for w in words if len(w) <= MAX_WORD_CHARS)
    return counts


def reference_vocabulary(word_counts, vocab_size, specials, min_frequency=2):
    """Recount every pair after every merge; the most frequent, ties to the smallest pair of symbol ids."""
    vocab = list(specials)
    words = sorted(word_counts)
    vocab += sorted({c for w in words for c in w} - set(vocab)) + sorted(
        {"##" + c for w in words for c in w[1:]} - set(vocab)
    )
    ids = {t: i for i, t in enumerate(vocab)}
    symbols = {w: [ids[w[0]], *(ids["##" + c] for c in w[1:])] for w in words}
    while len(vocab) < vocab_size:
        pairs = {}
        for w in words:
            for pair in zip(symbols[w], symbols[w][1:]):
                pairs[pair] = pairs.get(pair, 0) + word_counts[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        text = vocab[best[0]] + vocab[best[1]][2:]
        if text not in ids:
            ids[text] = len(vocab)
            vocab.append(text)
        for w in words:
            s, out, i = symbols[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(ids[text])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            symbols[w] = out
    return vocab


def test_word_counts_match_the_normaliser_and_pre_tokeniser_applied_to_whole_texts():
    from electra_pretrain.tokenizer import _bert_pipeline
    from electra_pretrain.wordpiece_trainer import count_words

    for lowercase in (True, False):
        from tokenizers import Tokenizer
        from tokenizers.models import WordPiece

        pipeline = _bert_pipeline(Tokenizer(WordPiece(unk_token="[UNK]")), lowercase)
        texts = AWKWARD * 3 + [WORDS, "x" * 300 + " tail"]
        counts, too_long = count_words(texts, pipeline, show_progress=False)
        assert counts == reference_counts(texts, pipeline) and too_long == 1


def test_the_merge_loop_learns_what_recounting_every_pair_after_every_merge_learns():
    from collections import Counter

    from electra_pretrain.tokenizer import SPECIAL_TOKENS
    from electra_pretrain.wordpiece_trainer import learn_vocabulary

    text = " ".join([WORDS] * 3 + ["banana bandana cabana anagram nana ban bandanas"] * 2)
    counts = Counter(text.split())
    for size in (60, 100, 200):  # the alphabet is 41 tokens with the specials; merges run out at 156
        assert learn_vocabulary(counts, size, SPECIAL_TOKENS, show_progress=False) == reference_vocabulary(
            counts, size, SPECIAL_TOKENS
        )


def test_training_is_byte_identical_whatever_the_hash_seed(tmp_path):
    import subprocess
    import sys

    from .helpers.runs import ROOT

    script = (
        "import sys; from electra_pretrain.tokenizer import train_tokenizer; "
        f"t = train_tokenizer([open({str(ROOT / 'README.md')!r}).read()] * 2, 300, show_progress=False); "
        "sys.stdout.write(t.to_str())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1 and '"##' in outputs.pop()
