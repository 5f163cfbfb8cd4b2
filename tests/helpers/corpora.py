"""Small corpora written by the tests themselves (nothing downloaded)."""

from pathlib import Path

WORDS = (
    "the quick brown fox jumps over lazy dog river mountain city music science history garden winter summer "
    "bright quiet ancient modern small large green blue red people"
)


def sentence(doc: int, i: int) -> str:
    words = WORDS.split()
    picked = " ".join(words[(doc * 7 + i * 3 + k) % len(words)] for k in range(6 + (doc + i) % 9))
    return f"Document {doc} sentence {i}: {picked}."


def write_blank_line_corpus(path: Path, documents: int = 12, sentences: int = 15, first_doc: int = 0) -> Path:
    """The original ELECTRA format: a sentence per line, a blank line between documents."""
    text = "\n\n".join(
        "\n".join(sentence(d, i) for i in range(sentences)) for d in range(first_doc, first_doc + documents)
    )
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_line_corpus(path: Path, documents: int = 8, sentences: int = 30) -> Path:
    """One document per (long) line, as the State of the Union demo corpus."""
    path.write_text("\n".join(" ".join(sentence(d, i) for i in range(sentences)) for d in range(documents)) + "\n")
    return path


def tiny_config(**overrides):
    """The one tiny model of the unit tests (1 layer x 16, vocabulary 40); overrides change any field."""
    from electra_pretrain.model_config import ElectraConfig

    return ElectraConfig(
        **{
            **dict(
                vocab_size=40,
                embedding_size=8,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=64,
            ),
            **overrides,
        }
    )


# Labelled data for fine-tuning tests: the label is decided by one marker word, so a model can learn it in a few
# dozen steps and a score near 1 proves that it did.
FILLER = [w for w in WORDS.split() if w not in ("summer", "winter", "river")]


def labelled_sentence(rng, positive: bool) -> str:
    words = rng.sample(FILLER, rng.randint(2, 6)) + ["summer" if positive else "winter"]
    rng.shuffle(words)
    return " ".join(words)


def write_classification_csv(path: Path, rows: int, seed: int) -> Path:
    import csv
    import random

    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        for i in range(rows):
            positive = rng.random() < 0.5
            writer.writerow([i, labelled_sentence(rng, positive), "pos" if positive else "neg"])
    return path


def write_conll(path: Path, sentences: int, seed: int, long_sentence: int = 0) -> Path:
    """token POS tag lines in IOB2, a -DOCSTART- line, blank lines between sentences: "summer" or "winter" begins a
    SEASON chunk that "river" continues in every other sentence. `long_sentence`: one more sentence of that many
    words, all O."""
    import random

    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- O", ""]
    for s in range(sentences):
        words = [(word, "O") for word in rng.sample(FILLER, rng.randint(3, 7))]
        chunk = [(rng.choice(["summer", "winter"]), "B-SEASON")] + ([("river", "I-SEASON")] if s % 2 else [])
        at = rng.randint(0, len(words))
        words[at:at] = chunk
        lines += [f"{word} NN {tag}" for word, tag in words] + [""]
    if long_sentence:
        lines += [f"{word} NN O" for word in (FILLER * 10)[:long_sentence]] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def squad_document(questions: int, seed: int, impossible_share: float = 0.0, long_every: int = 0) -> dict:
    """SQuAD JSON: contexts of filler words in which "the capital is <city>"; the question asks for the capital and
    the answer is the city. `impossible_share` of the questions ask for something the context lacks (SQuAD 2.0);
    every `long_every`-th context is long enough to need several windows, the answer near its end."""
    import random

    rng = random.Random(seed)
    cities = ["paris", "rome", "oslo", "lima", "cairo", "quito"]
    paragraphs = []
    for i in range(questions):
        filler = " ".join(rng.choice(FILLER) for _ in range(rng.randint(4, 10)))
        city = rng.choice(cities)
        tail = " ".join(rng.choice(FILLER) for _ in range(60 if long_every and i % long_every == 0 else 3))
        if long_every and i % long_every == 0:
            context = f"{filler} {tail} the capital is {city} . {filler}"
        else:
            context = f"{filler} the capital is {city} . {tail}"
        start = context.index("the capital is ") + len("the capital is ")
        impossible = rng.random() < impossible_share
        question = "what is the river ?" if impossible else "what is the capital ?"
        answers = [] if impossible else [{"text": city, "answer_start": start}]
        paragraphs.append(
            {
                "context": context,
                "qas": [{"id": f"q{seed}-{i}", "question": question, "answers": answers, "is_impossible": impossible}],
            }
        )
    return {"version": "v2.0", "data": [{"title": "generated", "paragraphs": paragraphs}]}


def write_swag_csv(path: Path, rows: int, seed: int) -> Path:
    """SWAG's columns: sent1 (context), sent2 (start of the ending), ending0-3, label; the right ending is the one
    that says "summer"."""
    import csv
    import random

    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label"])
        for _ in range(rows):
            label = rng.randrange(4)
            endings = [" ".join(rng.sample(FILLER, 3) + (["summer"] if k == label else ["winter"])) for k in range(4)]
            writer.writerow([" ".join(rng.sample(FILLER, 5)), "then", *endings, label])
    return path
