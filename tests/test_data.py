"""Sources, the example builder, and the sharded, resumable stream."""

import bz2
import gzip
import itertools
import json
import logging
import random
import re
import tracemalloc
from collections import Counter

import datasets
import pytest
import torch

from electra_pretrain.pretrain.config import SourceSpec
from electra_pretrain.pretrain.packing import ExampleBuilder, sentence_units
from electra_pretrain.pretrain.sources import READ_STATS, documents, resolve_files
from electra_pretrain.pretrain.stream import Collator, ExampleStream, StreamConfig, example_dataloader
from electra_pretrain.tokenizer import train_tokenizer

from .helpers.corpora import WORDS, sentence, write_blank_line_corpus, write_line_corpus

L = 64


@pytest.fixture(scope="module")
def tok():
    corpus = [sentence(d, i) for d in range(30) for i in range(20)] + [WORDS]
    return train_tokenizer(corpus, vocab_size=200, show_progress=False)


def texts(spec: SourceSpec) -> list[str]:
    return [row["text"] for row in documents([spec], seed=0, shuffle_files=False)]


def doc_ids(tok, example) -> set[int]:
    return {int(m) for m in re.findall(r"document (\d+) sentence", tok.decode(example.input_ids))}


# ---------------------------------------------------------------- sources


def test_blank_line_and_line_layouts(tmp_path):
    blank = texts(SourceSpec(files=[str(write_blank_line_corpus(tmp_path / "a.txt", 3, 4))]))
    assert len(blank) == 3 and blank[1].split("\n")[0] == sentence(1, 0)
    line = texts(SourceSpec(files=[str(write_line_corpus(tmp_path / "b.txt", 5, 3))], document_boundary="line"))
    assert len(line) == 5 and line[2].startswith(sentence(2, 0))


def test_jsonl_parquet_and_compressed(tmp_path):
    rows = [{"body": f"doc {i} text", "id": i} for i in range(5)] + [{"body": "   ", "id": 9}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert texts(SourceSpec(files=[str(tmp_path / "d.jsonl")], text_field="body")) == [
        f"doc {i} text" for i in range(5)
    ]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    assert len(texts(SourceSpec(files=[str(tmp_path / "d.parquet")], text_field="body"))) == 5
    with pytest.raises(ValueError, match=r"no field 'text' \(fields: \['body', 'id'\]\)"):
        texts(SourceSpec(files=[str(tmp_path / "d.parquet")]))
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("one\ntwo\n\nthree\n")
    with bz2.open(tmp_path / "c2.txt.bz2", "wt") as f:
        f.write("four\n")
    assert texts(SourceSpec(files=[str(tmp_path / "c*")])) == ["one\ntwo", "three", "four"]


def test_globs_and_directories(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("sub/x.txt", "y.txt"):
        (tmp_path / name).write_text("hello\n")
    assert [p.split("/")[-1] for p in resolve_files([str(tmp_path)])] == ["x.txt", "y.txt"]
    with pytest.raises(FileNotFoundError, match=r"'.*/nope\*.txt' matches no file"):
        resolve_files([str(tmp_path / "nope*.txt")])


def test_mixture_by_weight(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(f"a{i}" for i in range(400)))
    (tmp_path / "b.txt").write_text("\n".join(f"b{i}" for i in range(400)))
    specs = [
        SourceSpec(files=[str(tmp_path / "a.txt")], document_boundary="line", weight=3.0),
        SourceSpec(files=[str(tmp_path / "b.txt")], document_boundary="line", weight=1.0),
    ]
    first = [row["text"][0] for row in itertools.islice(documents(specs, seed=0), 200)]
    assert 0.65 < first.count("a") / 200 < 0.85


def test_bad_text_is_repaired_or_skipped_and_counted(tmp_path, caplog):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\n \t\n")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok\r\nsecond\x00 line\r\n\r\nnext doc\n")
    READ_STATS.clear()
    with caplog.at_level(logging.WARNING):
        docs = texts(SourceSpec(files=[str(tmp_path / "*.txt")]))
    assert docs == ["caf\ufffd ok\nsecond line", "next doc"]
    assert READ_STATS["empty_files"] == 2 and READ_STATS["invalid_utf8_replaced"] == 1
    assert READ_STATS["nul_bytes_removed"] == 1
    assert re.search(r"bad.txt: 1 invalid UTF-8 sequences replaced", caplog.text)
    assert re.search(r"empty.txt: no text", caplog.text) and re.search(r"blank.txt: no text", caplog.text)


@pytest.mark.slow
def test_ten_megabyte_line_in_bounded_memory(tmp_path, tok):
    line = " ".join(f"{WORDS}." for _ in range(10 * 2**20 // (len(WORDS) + 2)))
    (tmp_path / "huge.txt").write_text(line + "\n")
    del line
    spec = SourceSpec(files=[str(tmp_path / "huge.txt")], document_boundary="line")
    builder = ExampleBuilder(tok, L, random.Random(0))
    tracemalloc.start()
    tokens = documents_seen = 0
    for row in documents([spec], seed=0):
        documents_seen += 1
        tokens += sum(len(e.input_ids) for e in builder.document_examples(row["text"]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert documents_seen == 10  # cut every MAX_DOCUMENT_CHARS characters
    assert tokens > 10 * 2**20 / 6  # all of it was tokenised
    assert peak < 80 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------- example builder


def test_sentence_units():
    assert sentence_units('One. Two!  Three? "Four." Five\nSix') == ["One.", "Two!", "Three?", '"Four."', "Five", "Six"]


def test_examples_follow_the_reference_layout(tok, tmp_path):
    write_blank_line_corpus(tmp_path / "c.txt", documents=40, sentences=25)
    builder = ExampleBuilder(tok, L, random.Random(0))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    examples, total = [], 0
    for text in texts(SourceSpec(files=[str(tmp_path / "c.txt")])):
        total += sum(len(u) for u in builder.tokenize_units(text))
        for ex in builder.document_examples(text):
            examples.append(ex)
            assert len(doc_ids(tok, ex)) <= 1  # never crosses a document
    single = 0
    for ex in examples:
        ids = ex.input_ids
        assert 3 <= len(ids) <= L and ids[0] == cls and ids[-1] == sep and ids[ex.num_first - 1] == sep
        assert ids.count(sep) in (1, 2) and cls not in ids[1:]
        single += ids.count(sep) == 1
    # nothing is dropped: every token of every unit is in some example
    assert sum(len(e.input_ids) - 1 - e.input_ids.count(sep) for e in examples) == total
    full = sum(len(e.input_ids) == L for e in examples) / len(examples)
    assert full > 0.7, full
    # ~10% single-segment by design, plus document tails that hold one unit
    assert 0.05 < single / len(examples) < 0.3, single / len(examples)


def test_overlong_unit_is_cut_not_dropped(tok):
    builder = ExampleBuilder(tok, 16, random.Random(0))
    text = " ".join(["river"] * 100)
    examples = list(builder.document_examples(text))
    assert sum(e.input_ids.count(tok.token_to_id("river")) for e in examples) == 100
    assert all(len(e.input_ids) <= 16 for e in examples)


# ---------------------------------------------------------------- stream


def make_stream(tok, spec, rank=0, world_size=1, buffer=50, seed=3, shard_files=False):
    return ExampleStream(
        lambda epoch: documents([spec], seed=seed + epoch),
        tok,
        StreamConfig(max_seq_length=L, shuffle_buffer=buffer, seed=seed, shard_files=shard_files),
        rank,
        world_size,
    )


def batches(loader, n):
    return [b["input_ids"].clone() for b in itertools.islice(loader, n)]


def test_collator_pads_and_sets_token_types():
    from electra_pretrain.pretrain.packing import Example

    out = Collator(6, pad_token_id=0)([Example([2, 7, 3, 8, 3], 3), Example([2, 9, 3], 3)])
    assert out["input_ids"].tolist() == [[2, 7, 3, 8, 3, 0], [2, 9, 3, 0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 0], [0] * 6]


@pytest.mark.parametrize("shard_files", [False, True], ids=["by-document", "by-file"])
def test_resume_continues_with_the_next_batches(tok, tmp_path, shard_files):
    spec = SourceSpec(files=[str(write_blank_line_corpus(tmp_path / f"{i}.txt", 5, 20)) for i in range(3)])
    reference = batches(example_dataloader(make_stream(tok, spec, shard_files=shard_files), 4, 0), 60)  # 2 epochs
    stream = make_stream(tok, spec, shard_files=shard_files)
    got = batches(example_dataloader(stream, 4, 0), 7)
    for stop in (23, 60):  # two resumes in a row, each from a freshly built pipeline
        state = torch.load(_roundtrip(stream.state_dict(), tmp_path), weights_only=True)
        assert state["mode"] == ("file" if shard_files else "document")
        stream = make_stream(tok, spec, shard_files=shard_files)
        stream.load_state_dict(state)
        got += batches(example_dataloader(stream, 4, 0), stop - len(got))
    assert stream._epoch >= 1
    assert len(got) == 60 and all(torch.equal(a, b) for a, b in zip(got, reference))


def _roundtrip(state, tmp_path):
    torch.save(state, tmp_path / "state.pt")
    return tmp_path / "state.pt"


def test_same_seed_same_stream_other_seed_other_stream(tok, tmp_path):
    spec = SourceSpec(files=[str(write_blank_line_corpus(tmp_path / "c.txt", 10, 20))])
    a, b, c = (batches(example_dataloader(make_stream(tok, spec, seed=s), 4, 0), 5) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("shard_files", [False, True], ids=["by-document", "by-file"])
@pytest.mark.parametrize("num_files", [1, 2, 3])
def test_two_ranks_see_disjoint_examples_covering_the_input(tok, tmp_path, num_files, shard_files):
    """By file (at least as many files as slots), a rank reads only its own files; otherwise every rank reads every
    document and tokenizes every other one. Either way the ranks' documents are disjoint and cover the input."""
    files = [str(write_blank_line_corpus(tmp_path / f"{i}.txt", 5, 12, first_doc=10 * i)) for i in range(num_files)]
    spec = SourceSpec(files=files)
    all_docs = {int(m) for t in texts(spec) for m in re.findall(r"Document (\d+)", t)}
    by_file = shard_files and num_files >= 2
    seen, tokens, sep = [], 0, tok.token_to_id("[SEP]")
    for rank in (0, 1):
        read: list[int] = []

        def reading(row, read=read):
            read.extend({int(m) for m in re.findall(r"document (\d+)", row["text"], re.IGNORECASE)})  # one document
            return row

        stream = ExampleStream(
            lambda epoch: documents([spec], seed=3 + epoch).map(reading),
            tok,
            StreamConfig(max_seq_length=L, shuffle_buffer=50, seed=3, shard_files=shard_files),
            rank,
            2,
        )
        docs = set()
        for example in stream:
            if stream._epoch:  # the first example of the next epoch
                break
            docs |= doc_ids(tok, example)
            tokens += len(example.input_ids) - 1 - example.input_ids.count(sep)
        seen.append(docs)
        first_epoch = read[: len(all_docs) if not by_file else len(docs)]
        if by_file:  # its own files only: whole files, ten document ids apart
            assert set(first_epoch) == docs and len({d // 10 for d in docs}) == len(docs) // 5
        else:
            assert set(first_epoch) == all_docs
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == all_docs
    builder = ExampleBuilder(tok, L, random.Random(0))
    assert tokens == sum(len(u) for t in texts(spec) for u in builder.tokenize_units(t))


def content_tokens(tok, example) -> list[int]:
    special = {tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")}
    return [i for i in example.input_ids if i not in special]


@pytest.mark.parametrize("shard_files", [False, True], ids=["by-document", "by-file"])
@pytest.mark.parametrize("new_world", [1, 3])
def test_resuming_on_another_number_of_slots_reads_every_token_once(tok, tmp_path, new_world, shard_files):
    files = [str(write_blank_line_corpus(tmp_path / f"{i}.txt", 5, 12, first_doc=10 * i)) for i in range(3)]
    spec = SourceSpec(files=files)
    builder = ExampleBuilder(tok, L, random.Random(0))
    everything = Counter(i for t in texts(spec) for unit in builder.tokenize_units(t) for i in unit)
    seen, old_states = Counter(), []
    for rank, taken in ((0, 9), (1, 4)):  # two old processes, cut at different points of the epoch
        stream = make_stream(tok, spec, rank=rank, world_size=2, buffer=5, shard_files=shard_files)
        for example in itertools.islice(stream, taken):
            seen.update(content_tokens(tok, example))
        old_states.append(torch.load(_roundtrip(stream.state_dict(), tmp_path), weights_only=True))
        assert old_states[-1]["mode"] == ("file" if shard_files else "document")
    for rank in range(new_world):
        stream = make_stream(tok, spec, rank=rank, world_size=new_world, buffer=5, shard_files=shard_files)
        stream.resume_elsewhere(old_states)
        for example in stream:
            if stream._epoch:  # the first example of the next epoch
                break
            seen.update(content_tokens(tok, example))
    assert seen == everything  # nothing read twice, nothing left out


@pytest.mark.parametrize("new_world", [1, 3])
def test_file_shards_resumed_on_another_layout_across_two_epochs_read_every_document_once(tok, tmp_path, new_world):
    """One old slot is already in the next epoch when the other is cut mid-epoch: the new slots finish both
    epochs' old shards from each old slot's own position."""
    epochs = [
        [str(write_blank_line_corpus(tmp_path / f"e{e}_{i}.txt", 4, 10, first_doc=100 * e + 10 * i)) for i in range(3)]
        for e in range(2)
    ]

    def stream(rank, world):
        return ExampleStream(
            lambda epoch: documents([SourceSpec(files=epochs[min(epoch, 1)])], seed=epoch),
            tok,
            StreamConfig(max_seq_length=L, shuffle_buffer=5, seed=3, shard_files=True),
            rank,
            world,
        )

    builder = ExampleBuilder(tok, L, random.Random(0))
    everything = Counter(
        i
        for files in epochs
        for t in texts(SourceSpec(files=files))
        for unit in builder.tokenize_units(t)
        for i in unit
    )
    seen, old_states = Counter(), []
    for rank in range(2):
        old = stream(rank, 2)
        for example in old:
            seen.update(content_tokens(tok, example))
            if (rank == 0 and old.examples_yielded == 5) or (rank == 1 and old._epoch == 1):
                break  # slot 0 mid-way through epoch 0; slot 1 done with it, one example into epoch 1
        old_states.append(torch.load(_roundtrip(old.state_dict(), tmp_path), weights_only=True))
    assert [s["epoch"] for s in old_states] == [0, 1] and {s["mode"] for s in old_states} == {"file"}
    for rank in range(new_world):
        new = stream(rank, new_world)
        new.resume_elsewhere(old_states)
        for example in new:
            if new._epoch == 2:
                break
            seen.update(content_tokens(tok, example))
    assert seen == everything  # both epochs: nothing read twice, nothing left out


@pytest.mark.parametrize("shard_files", [False, True], ids=["by-document", "by-file"])
@pytest.mark.parametrize("old_workers, new_workers", [(2, 0), (0, 2)])
def test_resuming_data_workers_on_another_count_reads_every_document_once(
    tok, tmp_path, old_workers, new_workers, shard_files
):
    """The loader's state holds each worker's state as of its last snapshot and the batches since; those batches
    are replayed before the documents are dealt out again, so none is trained on twice."""
    from electra_pretrain.pretrain.stream import current_slot_states

    first = [str(write_blank_line_corpus(tmp_path / f"{i}.txt", 30, 12, first_doc=30 * i)) for i in range(3)]
    later = tmp_path / "later.txt"  # every later epoch: [UNK]s only, which the first epoch's documents never hold
    later.write_text("\n\n".join("жж жж жж" for _ in range(40)) + "\n")

    def stream():
        return ExampleStream(
            lambda epoch: documents([SourceSpec(files=first if epoch == 0 else [str(later)])], seed=epoch),
            tok,
            StreamConfig(max_seq_length=L, shuffle_buffer=5, seed=3, shard_files=shard_files),
        )

    builder = ExampleBuilder(tok, L, random.Random(0))
    everything = Counter(i for t in texts(SourceSpec(files=first)) for unit in builder.tokenize_units(t) for i in unit)
    marker = tok.token_to_id("[UNK]")
    assert marker not in everything

    def first_epoch_tokens(batch) -> Counter:
        found = Counter()
        for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
            row = [i for i, m in zip(ids, mask) if m and i not in (tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"))]
            if marker not in row:
                found.update(row)
        return found

    old = stream()
    old_loader = example_dataloader(old, 2, tok.token_to_id("[PAD]"), old_workers)
    iterator = iter(old_loader)
    seen = Counter()
    for _ in range(37):  # a snapshot at 32, five batches after it, all of the first epoch
        seen += first_epoch_tokens(next(iterator))
    assert sum(seen.values()) < sum(everything.values()) / 2
    state = torch.load(_roundtrip(old_loader.state_dict(), tmp_path), weights_only=True)
    del iterator
    new = stream()
    new.resume_elsewhere(current_slot_states(state, 2, new.advance))
    iterator = iter(example_dataloader(new, 2, tok.token_to_id("[PAD]"), new_workers))
    for _ in range(400):  # well into the later epochs
        seen += first_epoch_tokens(next(iterator))
    del iterator
    assert seen == everything  # nothing read twice, nothing left out
