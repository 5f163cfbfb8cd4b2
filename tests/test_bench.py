"""The step benchmark: its JSON contract, every ablation variant, and the allocator setting."""

import json
import subprocess
import sys

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
