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
