"""Small corpora written by the tests themselves (nothing downloaded)."""

from pathlib import Path

WORDS = ("the quick brown fox jumps over lazy dog river mountain city music science history garden winter summer "
         "bright quiet ancient modern small large green blue red people")


def sentence(doc: int, i: int) -> str:
    words = WORDS.split()
    picked = " ".join(words[(doc * 7 + i * 3 + k) % len(words)] for k in range(6 + (doc + i) % 9))
    return f"Document {doc} sentence {i}: {picked}."


def write_blank_line_corpus(path: Path, documents: int = 12, sentences: int = 15, first_doc: int = 0) -> Path:
    """The original ELECTRA format: a sentence per line, a blank line between documents."""
    text = "\n\n".join("\n".join(sentence(d, i) for i in range(sentences))
                       for d in range(first_doc, first_doc + documents))
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_line_corpus(path: Path, documents: int = 8, sentences: int = 30) -> Path:
    """One document per (long) line, as the State of the Union demo corpus."""
    path.write_text("\n".join(" ".join(sentence(d, i) for i in range(sentences)) for d in range(documents)) + "\n")
    return path


def tiny_config(**overrides):
    """The one tiny model of the unit tests (1 layer x 16, vocabulary 40); overrides change any field."""
    from electra_pretrain.modeling import ElectraConfig

    return ElectraConfig(**{**dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32, max_position_embeddings=64),
                            **overrides})
