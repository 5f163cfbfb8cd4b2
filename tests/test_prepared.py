"""Prepared examples (`electra-pretrain prepare`, data=prepared): the stream's examples built once, whatever the
process count; a run refuses a folder built for another tokenizer or length; every example dealt once across
layouts; a killed run with two workers resumes bit-identically."""

import json
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from electra_pretrain.pretrain.config import SourceSpec
from electra_pretrain.pretrain.packing import ExampleBuilder
from electra_pretrain.pretrain.prepare import PrepareSettings, prepare
from electra_pretrain.pretrain.prepared import (
    Manifest,
    PreparedExamples,
    PreparedLoader,
    PreparedStream,
    shard_files,
    unpack,
)
from electra_pretrain.pretrain.sources import documents, is_held_out
from electra_pretrain.pretrain.stream import current_slot_states, make_dataloader
from electra_pretrain.tokenizer import load_tokenizer

from .helpers.runs import ENV, ROOT, assert_same_exports, losses, overrides, train
from .test_train import kill_after_first_checkpoint


def settings(corpus, out, **kwargs) -> PrepareSettings:
    return PrepareSettings(
        sources=[SourceSpec(files=[str(corpus)])],
        tokenizer=str(corpus.parent / "tokenizer"),
        out=str(out),
        max_seq_length=64,
        **kwargs,
    )


def rows(folder) -> list[tuple[int, ...]]:
    """Every prepared example as its ids without padding, shard by shard."""
    examples = PreparedExamples(Manifest.read(folder))
    batch = unpack(examples.gather(np.arange(len(examples))))
    return [tuple(ids[: int(n)].tolist()) for ids, n in zip(batch["input_ids"], batch["attention_mask"].sum(1))]


def test_prepare_builds_the_streams_examples_whatever_the_process_count(corpus, tmp_path):
    one = prepare(settings(corpus, tmp_path / "one", shards=3, num_proc=1, held_out_share=0.1))
    prepare(settings(corpus, tmp_path / "two", shards=3, num_proc=2, held_out_share=0.1))
    for name in (*shard_files(0), *shard_files(2), "held_out.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    # shard k holds what the stream's builder makes of training documents k, k + 3, ... with the RNG seeded "0:k"
    texts = [r["text"] for r in documents([SourceSpec(files=[str(corpus)])], seed=0, shuffle_files=False)]
    training = [t for t in texts if not is_held_out(t, 0.1)]
    tokenizer = load_tokenizer(corpus.parent / "tokenizer")
    expected = []
    for k in range(3):
        builder = ExampleBuilder(tokenizer, 64, random.Random(f"0:{k}"))
        expected += [tuple(e.input_ids) for t in training[k::3] for e in builder.document_examples(t)]
    assert rows(tmp_path / "one") == expected
    held_out = [json.loads(line)["text"] for line in (tmp_path / "one" / "held_out.jsonl").read_text().splitlines()]
    assert held_out == [t for t in texts if is_held_out(t, 0.1)] and held_out
    assert one["documents"] == len(training) and one["held_out_documents"] == len(held_out)
    assert one["examples"] == len(expected) and one["tokens"] == sum(map(len, expected))


@pytest.mark.slow
def test_a_run_refuses_examples_prepared_for_another_tokenizer_length_or_held_out_share(corpus, tmp_path):
    prepared = tmp_path / "prepared"
    prepare(settings(corpus, prepared, held_out_share=0.1))
    other = tmp_path / "other"
    from electra_pretrain.tokenizer import save_tokenizer, train_tokenizer

    save_tokenizer(train_tokenizer([(corpus / "part0.txt").read_text()], 250, show_progress=False), other)
    base = [
        a
        for a in overrides(corpus, tmp_path / "run", "data=prepared", f"data.path={prepared}", "trainer.max_steps=2")
        if not a.startswith(("data.files", "data=text", "tokenizer.path"))
    ]
    cases = {
        f"tokenizer.path={other}": "were built with another tokenizer",
        "data.max_seq_length=32": "its examples are 64 tokens long, the run's data.max_seq_length is 32",
        "data.eval_share=0.2": "held out 0.1 of the documents when it was prepared",
    }
    for override, message in cases.items():
        result = train([*base, override], check=False)
        assert result.returncode == 1 and message in result.stderr.strip().splitlines()[-1]
    (prepared / shard_files(1)[0]).write_bytes(b"\x00" * 64)  # a damaged shard
    result = train([*base, "data.eval_share=0.1"], check=False)
    assert result.returncode == 1 and "shard_00001.ids: does not match its checksum" in result.stderr
    assert "held-out evaluation" not in result.stdout


def unique_examples_corpus(folder, count: int):
    """`count` one-line documents, each its own short example with its own ids."""
    folder.mkdir()
    (folder / "docs.txt").write_text("".join(f"document {i} the quick brown fox\n" for i in range(count)))
    return folder


@pytest.mark.parametrize("old_workers, new_workers", [(2, 0), (0, 2)])
def test_workers_to_none_and_back_deal_every_prepared_example_once(corpus, tmp_path, old_workers, new_workers):
    batch, count = 4, 104  # 12 batches before, 14 after: one epoch exactly, the workers' turns even
    text = unique_examples_corpus(tmp_path / "c", count)
    prepare(
        PrepareSettings(
            sources=[SourceSpec(files=[str(text)], document_boundary="line")],
            tokenizer=str(corpus.parent / "tokenizer"),
            out=str(tmp_path / "p"),
            max_seq_length=32,
        )
    )
    examples = PreparedExamples(Manifest.read(tmp_path / "p"))
    assert len(examples) == count and len(set(rows(tmp_path / "p"))) == count

    def loader(stream, workers):
        return PreparedLoader(make_dataloader(stream, None, None, seed=0, num_workers=workers))

    def content(b):
        return [tuple(ids[: int(n)].tolist()) for ids, n in zip(b["input_ids"], b["attention_mask"].sum(1))]

    old = PreparedStream(examples, batch, seed=5)
    old_loader = loader(old, old_workers)
    seen = [row for b in _take(old_loader, 12) for row in content(b)]  # no snapshot yet: every batch a replay
    state = old_loader.state_dict()
    new = PreparedStream(examples, batch, seed=5)
    new.resume_elsewhere(current_slot_states(state, batch, new.advance))
    seen += [row for b in _take(loader(new, new_workers), 14) for row in content(b)]
    assert len(seen) == count and set(seen) == set(rows(tmp_path / "p"))  # each example exactly once


def _take(loader, n):
    iterator = iter(loader)
    taken = [next(iterator) for _ in range(n)]
    del iterator
    return taken


@pytest.mark.slow
def test_a_killed_run_on_prepared_examples_with_two_workers_resumes_bit_exactly(corpus, tmp_path):
    prepared = tmp_path / "prepared"
    prepare(settings(corpus, prepared))
    common = ["data=prepared", f"data.path={prepared}", "data.num_workers=2"]

    def args(out):
        return [
            a
            for a in overrides(corpus, out, *common)
            if not a.startswith(("data.files", "data=text", "tokenizer.path"))
        ]

    reference, out = tmp_path / "reference", tmp_path / "killed"
    train(args(reference))
    kill_after_first_checkpoint(args(out), out, signal.SIGKILL)
    assert "resumed from" in train(args(out)).stdout
    assert losses(out) == losses(reference)
    assert_same_exports(out, reference)


def test_prepare_on_the_command_line_names_a_missing_input(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "electra_pretrain", "prepare", "--tokenizer", str(tmp_path), "--out", str(tmp_path)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stderr.strip() == "error: prepare: give either files or --hub"


def test_prepared_batches_are_what_the_collator_makes():
    from electra_pretrain.pretrain.packing import Example
    from electra_pretrain.pretrain.stream import Collator

    examples = [Example([2, 7, 3, 8, 3], 3), Example([2, 9, 3], 3)]
    collated = Collator(6, 0)(examples)
    ids = np.zeros((2, 6), dtype=np.uint16)
    for row, example in enumerate(examples):
        ids[row, : len(example.input_ids)] = example.input_ids
    meta = np.array([[5, 3], [3, 3]], dtype=np.int32)
    prepared = PreparedExamples.__new__(PreparedExamples)
    prepared.length, prepared.dtype, prepared.starts, prepared._maps = 6, ids.dtype, np.array([0, 2]), [(ids, meta)]
    batch = unpack(prepared.gather(np.array([0, 1])))
    assert all(torch.equal(batch[k], collated[k]) for k in collated)
