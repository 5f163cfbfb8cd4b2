"""The step benchmark: its JSON contract, every ablation variant, and the allocator setting."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from electra_pretrain.allocator import keep_freed_memory
from electra_pretrain.tools.bench import ablation_variants, run_worker

BENCH_KEYS = {"tokens_per_s", "step_time_s", "flops_per_token", "mfu", "peak_mem_bytes"}


@pytest.mark.slow
def test_bench_json_has_ours_and_the_reference(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_pretrain",
            "bench",
            "--model",
            "tiny",
            "--seq-len",
            "32",
            "--batch-size",
            "4",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--json",
            "--peak-flops",
            "1e11",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert BENCH_KEYS <= set(result)
    assert result["tokens_per_s"] == pytest.approx(4 * 32 / result["step_time_s"])
    assert result["mfu"] == pytest.approx(result["flops_per_token"] * result["tokens_per_s"] / 1e11)
    assert result["peak_mem_bytes"] > 0 and result["reference"]["peak_mem_bytes"] > 0
    assert result["reference"]["kind"] in ("reference-eager", "reference-sdpa")
    assert result["speedup_vs_reference"] == pytest.approx(result["tokens_per_s"] / result["reference"]["tokens_per_s"])


@pytest.mark.parametrize(
    "variant",
    [pytest.param(variant, id=row.label[:40]) for row, variant in ablation_variants("cpu") if not variant.compile],
)
def test_every_cpu_ablation_change_builds_and_steps(variant):
    result = run_worker(variant, "tiny", seq_len=16, batch_size=2, device_name="cpu", steps=1, warmup=0)
    assert result["step_time_s"] > 0 and result["flops_per_token"] > 0


def test_keep_freed_memory_applies_on_glibc():
    assert keep_freed_memory() is True  # this machine's C library is glibc


@pytest.mark.parametrize("task", ["classification", "squad"])
def test_bench_finetune_runs_both_loops_on_the_same_features(tiny_export, tmp_path, task):
    """Both loops train on the same features for each kind with a transformers peer; the classification peer is
    scored too, and the figures are positive rates, not placeholders."""
    import json as json_module

    from electra_pretrain.tools.bench_finetune import bench_finetune

    from .helpers.corpora import squad_document, write_classification_csv

    overrides = [f"task={task}"]
    if task == "squad":
        overrides += ["task.doc_stride=16", "task.max_query_length=12"]
        train, valid = tmp_path / "train.json", tmp_path / "dev.json"
        train.write_text(json_module.dumps(squad_document(48, 1, long_every=3)))
        valid.write_text(json_module.dumps(squad_document(16, 2)))
    else:
        train = write_classification_csv(tmp_path / "train.csv", 48, 1)
        valid = write_classification_csv(tmp_path / "valid.csv", 16, 2)
    result = bench_finetune(
        str(tiny_export), str(train), str(valid), [0], epochs=1, batch_size=16, max_length=48, task=overrides
    )
    assert result["task"] == ("classification" if task == "classification" else "question_answering")
    assert result["train_examples"] >= 48  # question answering: a long context makes more than one window
    ours, peer = result["per_seed"][0]["ours"], result["per_seed"][0]["transformers"]
    assert ours["examples_per_s"] > 0 and peer["examples_per_s"] > 0 and result["throughput_ratio"] > 0
    assert 0 <= ours["score"] <= (1 if task == "classification" else 100)
    if task == "classification":
        assert 0 <= peer["score"] <= 1 and result["score_difference"] == pytest.approx(ours["score"] - peer["score"])
    else:
        assert peer["score"] is None and result["score_difference"] is None


def test_bench_data_times_both_paths_and_measures_what_a_slot_reads(corpus, tmp_path):
    """The same examples on the fly and prepared; by file a slot reads about its share of the corpus (measured),
    by document all of it; None where there are fewer files than slots."""
    from electra_pretrain.tools.bench_data import SLOT_COUNTS, bench_data

    from .helpers.corpora import write_blank_line_corpus

    files = [str(write_blank_line_corpus(tmp_path / f"{i}.txt", 4, 10, first_doc=10 * i)) for i in range(8)]
    result = bench_data(files, "blank_line", str(corpus.parent / "tokenizer"), 0, 64, 64, [0], batch_size=16)
    (row,) = result["rows"]
    assert row["on_the_fly_tokens_per_s"] > 0 and row["prepared_tokens_per_s"] > 0 and result["prepare"]["tokens"] > 0
    text = sum(len(p.read_bytes().decode().replace("\n\n", "").encode()) for p in map(Path, files))
    reads = {r["slots"]: r for r in result["reads"]}
    assert set(reads) == set(SLOT_COUNTS) and all(
        r["by_document_bytes_per_slot"] == result["corpus_bytes"] for r in reads.values()
    )
    assert text * 0.9 < reads[1]["by_file_bytes_per_slot"] <= result["corpus_bytes"]  # one slot reads everything
    assert reads[8]["by_file_bytes_per_slot"] < reads[1]["by_file_bytes_per_slot"] / 8 * 1.5  # about its eighth
    assert reads[32]["by_file_bytes_per_slot"] is None  # 8 files for 32 slots: by document
    assert result["projection"]["small"]["cores_prepared"] < result["projection"]["small"]["cores_on_the_fly"]
