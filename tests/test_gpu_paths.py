"""What a first GPU run would hit, exercised on the CPU wherever the CPU can run it: compiled checkpoints, CUDA
graphs with accumulation, fp16 overflows with fused AdamW, CUDA RNG states on fewer devices, generator logits in
fp32 under bf16 autocast, bf16 training end to end, the peak FLOP/s of each GPU, container CPU quotas."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from electra_pretrain.model_config import generator_config
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.objective import Electra

from .helpers.corpora import tiny_config
from .helpers.runs import ENV, ROOT, metrics, overrides, train


def one_line_error(result) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_compiled_run_saves_plain_key_names_and_resumes_with_compile_switched_off(corpus, tmp_path):
    out = tmp_path / "compiled"
    train(overrides(corpus, out, "trainer.compile=true", "trainer.max_steps=4", "trainer.save_every=4"))
    with safe_open(str(out / "checkpoints" / "step_4" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("_orig_mod" in k for k in keys)
    result = train(
        overrides(corpus, out, "trainer.max_steps=6", "trainer.allow_config_change=[trainer.compile,trainer.max_steps]")
    )
    assert "resumed from" in result.stdout and "at step 4" in result.stdout
    assert [r["step"] for r in metrics(out) if "loss" in r][-1] == 6
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_pretrain",
            "export",
            str(out / "checkpoints" / "step_4"),
            "--out",
            str(tmp_path / "e"),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]


def test_cuda_graphs_with_gradient_accumulation_are_refused(corpus, tmp_path):
    result = train(
        overrides(
            corpus,
            tmp_path / "graphs",
            "trainer.compile=true",
            "trainer.compile_mode=reduce-overhead",
            "trainer.micro_batch_size=4",
        ),
        check=False,
    )
    assert result.returncode == 1
    assert "trainer.compile_mode=reduce-overhead captures CUDA graphs" in one_line_error(result)
    assert "(here 2 micro-batches per step)" in one_line_error(result)


def test_micro_batch_size_caps_each_pass_and_never_asks_for_a_fraction():
    from electra_pretrain.pretrain.config import TrainerConfig

    config = TrainerConfig(global_batch_size=256, micro_batch_size=64)
    assert [config.accumulation_steps(n) for n in (1, 2, 4, 8)] == [4, 2, 1, 1]
    assert config.micro_batch(8) == 32


def model(vocab=60):
    config = tiny_config(vocab_size=vocab, embedding_size=16, hidden_size=32, intermediate_size=64)
    return Electra(
        ElectraGenerator(generator_config(config, 0.5)),
        ElectraDiscriminator(config),
        mask_token_id=4,
        special_token_ids=[0, 1, 2, 3, 4],
    )


def batch():
    ids = torch.randint(5, 60, (4, 16))
    ids[:, 0], ids[:, -1] = 2, 3
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_a_fused_optimizer_overflow_in_fp16_is_counted_and_kept_out_of_the_loss_mean():
    """fp16 needs a GPU; the loss scaler's logic does not: a CPU GradScaler with torch's fused AdamW on CPU runs the
    same accelerate path (the scaler handed to the prepared optimizer), and a step with an infinite loss must be
    reported as an fp16 overflow, skipped, and kept out of the spike guard's running mean."""
    from accelerate import Accelerator

    from electra_pretrain.pretrain.step import LossSpikeGuard, SkipCounts, train_step

    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    electra = model()
    optimizer = torch.optim.AdamW(electra.parameters(), lr=1e-3, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    electra, optimizer = accelerator.prepare(electra, optimizer)
    guard, skips = LossSpikeGuard(0.0, accelerator.device), SkipCounts(accelerator.device)
    train_step(electra, [batch()], optimizer, scheduler, accelerator, 1.0, guard, skips)
    before = {k: v.clone() for k, v in electra.state_dict().items()}
    mean = guard.state_dict()
    gen_weight = electra.gen_weight
    electra.gen_weight = float("inf")  # an overflowing loss, hence infinite gradients
    train_step(electra, [batch()], optimizer, scheduler, accelerator, 1.0, guard, skips)
    electra.gen_weight = gen_weight
    assert skips.read()[0]["fp16_overflow"] == 1
    assert all(torch.equal(before[k], v) for k, v in electra.state_dict().items())  # the update was skipped
    assert guard.state_dict() == mean  # the infinite loss never entered the running mean


def test_cuda_rng_states_are_restored_for_this_device_only():
    from electra_pretrain.pretrain.checkpoint import saved_cuda_state

    one, two = torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)
    assert saved_cuda_state(one, 0) is one  # saved as this process's device's state alone
    assert saved_cuda_state([one, two], 1) is two  # older checkpoints: every device visible then
    assert saved_cuda_state([one, two], 3) is None  # a device that was not visible then: left alone
    assert saved_cuda_state(None, 0) is None


def test_generator_logits_stay_fp32_under_bf16_autocast():
    generator = ElectraGenerator(generator_config(tiny_config(vocab_size=60, hidden_size=32), 0.5))
    ids = batch()["input_ids"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = generator(ids, torch.ones_like(ids), None)
        hidden = generator.generator_predictions(generator.electra(ids, torch.ones_like(ids), None))
    assert hidden.dtype == torch.bfloat16 and logits.dtype == torch.float32  # the encoder is bf16, its logits not


@pytest.mark.slow
def test_bf16_autocast_trains_and_evaluates_on_cpu(corpus, tmp_path):
    out = tmp_path / "bf16"
    result = train(
        overrides(
            corpus,
            out,
            "trainer.mixed_precision=bf16",
            "trainer.max_steps=8",
            "trainer.eval_every=8",
            f"data.eval_files=[{corpus / 'part0.txt'}]",
        )
    )
    assert "precision bf16" in result.stdout
    rows = [r for r in metrics(out) if "loss" in r]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    assert [r for r in metrics(out) if "eval/random_replacement_auc" in r]
    assert all(0.0 <= r["data_wait_share"] <= 1.0 for r in rows)


def test_each_gpu_gets_its_own_data_sheet_peak():
    from electra_pretrain.flops import gpu_peak_flops

    assert gpu_peak_flops("bf16", "NVIDIA H100 80GB HBM3")[0] == 989e12  # SXM
    assert gpu_peak_flops("bf16", "NVIDIA H100 PCIe")[0] == 756e12
    assert gpu_peak_flops("bf16", "NVIDIA H100 NVL")[0] == 835e12
    assert gpu_peak_flops("no", "NVIDIA A100-SXM4-80GB")[0] == 156e12  # fp32 on TF32 tensor cores
    assert gpu_peak_flops("bf16", "NVIDIA A10G")[0] == 70e12
    assert gpu_peak_flops("bf16", "Some Future GPU") is None


def test_a_containers_cpu_quota_caps_the_worker_count(tmp_path):
    from electra_pretrain.pretrain.stream import usable_cpus

    cores = usable_cpus(str(tmp_path))  # no quota files: the affinity
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # one CPU's worth
    assert usable_cpus(str(tmp_path)) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(str(tmp_path)) == cores
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1: half a CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(str(tmp_path)) == 1


def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "launch" / "gpu_check.sh"), str(tmp_path / "report")],
        cwd=ROOT,
        env={**ENV, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ["gpu-check: no CUDA device here (torch sees none); nothing to check"]
    assert json.loads((tmp_path / "report" / "gpu-report.json").read_text())["cuda"] is False


@pytest.mark.slow
def test_the_gpu_check_plan_runs_end_to_end_at_toy_sizes_on_the_cpu(corpus, tmp_path):
    """The plan `make gpu-check` runs on a GPU, at toy sizes here, so that the first GPU meets a tested script."""
    report = tmp_path / "report"
    result = subprocess.run(
        ["bash", str(ROOT / "launch" / "gpu_check.sh"), str(report), "--on-cpu", "--corpus", str(corpus)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    written = json.loads((report / "gpu-report.json").read_text())
    assert [step["returncode"] for step in written["steps"]] == [0] * 5
    training = written["steps"][-1]["result"]
    assert training["train"][-1]["step"] == 6 and "eval/random_replacement_auc" in training["eval"][-1]
    assert "data_wait_share" in training["train"][-1]
    assert "## gpu tests: exit 0" in (report / "gpu-report.md").read_text()
