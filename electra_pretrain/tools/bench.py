"""Throughput benchmarks: our training step against a transformers-built peer (the data path: bench_data.py).

Each model benchmark runs in a child process of its own so that peak memory is that run's alone: on CUDA the
allocator's peak, on CPU the child's peak RSS minus its RSS before the model was built.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F

from electra_pretrain.allocator import keep_freed_memory
from electra_pretrain.config_base import AdamWConfig
from electra_pretrain.devices import allow_tf32
from electra_pretrain.dropout import set_dropout_implementation
from electra_pretrain.flops import gpu_peak_flops
from electra_pretrain.model_config import generator_config, preset_config
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.optim import build_optimizer, parameter_groups
from electra_pretrain.pretrain.metrics import electra_train_flops_per_token
from electra_pretrain.pretrain.objective import Electra, gumbel_sample, max_predictions_for
from electra_pretrain.pretrain.step import LossSpikeGuard, SkipCounts, train_step

# Generator width per preset, as in configs/model/*.yaml.
GENERATOR_FRACTION = {"tiny": 0.5, "small": 0.25, "base": 1 / 3, "large": 0.25}
PAD, CLS, SEP, MASK = 0, 101, 102, 103  # the BERT uncased layout


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, device: torch.device) -> dict:
    """Packed rows (no padding, as the example builder produces at full length): [CLS] A [SEP] B [SEP]."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, vocab_size, (batch_size, seq_len), generator=g)
    input_ids[:, 0], input_ids[:, seq_len // 2], input_ids[:, -1] = CLS, SEP, SEP
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, seq_len // 2 + 1 :] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "token_type_ids": token_type_ids.to(device),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ReferenceElectra(torch.nn.Module):
    """How existing reproductions build ELECTRA from transformers: shared embeddings, full-vocabulary MLM logits."""

    def __init__(self, preset: str, attn_implementation: str, mask_prob: float = 0.15):
        super().__init__()
        import transformers

        disc = preset_config(preset)
        gen = generator_config(disc, GENERATOR_FRACTION[preset])

        def hf_config(config):
            hf = transformers.ElectraConfig(**vars(config))
            hf._attn_implementation = attn_implementation
            return hf

        self.generator = transformers.ElectraForMaskedLM(hf_config(gen))
        self.discriminator = transformers.ElectraForPreTraining(hf_config(disc))
        self.discriminator.electra.embeddings = self.generator.electra.embeddings
        self.mask_prob = mask_prob

    def forward(self, input_ids, attention_mask, token_type_ids):
        special = (input_ids == CLS) | (input_ids == SEP) | (input_ids == PAD)
        masked = (torch.rand(input_ids.shape, device=input_ids.device) < self.mask_prob) & ~special
        gen_input = input_ids.masked_fill(masked, MASK)
        labels = input_ids.masked_fill(~masked, -100)
        logits = self.generator(gen_input, attention_mask, token_type_ids).logits  # (B, L, V)
        mlm_loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        with torch.no_grad():
            sample_logits = logits[masked].float()
            gumbel = -torch.log(-torch.log(torch.rand_like(sample_logits).clamp_(min=1e-20)))
            sampled = (sample_logits + gumbel).argmax(-1)
        disc_input = input_ids.clone()
        disc_input[masked] = sampled
        replaced = (disc_input != input_ids).float()
        disc_logits = self.discriminator(disc_input, attention_mask, token_type_ids).logits
        rtd_loss = F.binary_cross_entropy_with_logits(disc_logits.float(), replaced)
        return mlm_loss + 50.0 * rtd_loss


@dataclass(frozen=True)
class Variant:
    """One way of building the training step. The defaults are the framework's own: what train.py runs."""

    kind: str = "ours"  # ours | reference-eager | reference-sdpa
    precision: str = "no"  # no | fp16 | bf16 (accelerate mixed precision)
    attention: str = "sdpa"  # model.attn_implementation
    optimizer: str = "auto"  # optim.implementation: auto is fused (config_base.OPTIMIZER_IMPLEMENTATIONS)
    dropout: str = "auto"  # model.dropout_implementation
    logits: str = "slots"  # slots | all: (B, L, V) logits, slots gathered | all+sampling: also sampled everywhere
    sync_every_step: bool = False  # read the loss on the host after every step, as loops that print it do
    keep_freed_memory: bool = True  # trainer.keep_freed_memory (CPU only)
    compile: bool = False  # trainer.compile
    compile_mode: str = "default"  # trainer.compile_mode
    vocab_size: int = 30522


class FullVocabularyElectra(Electra):
    """Ablation baseline: generator logits at every position (B, L, V), then the prediction slots gathered.

    With `sample_everywhere`, replacements are drawn at every position as well (and those at the slots used): the
    cost of sampling from full-vocabulary logits.
    """

    def __init__(self, *args, sample_everywhere: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.sample_everywhere = sample_everywhere

    def generator_logits(self, masked, attention_mask, token_type_ids):
        logits = self.generator(masked.input_ids, attention_mask, token_type_ids)  # (B, L, V)
        if self.sample_everywhere:
            self.slot_samples = gumbel_sample(logits.detach(), self.temperature).gather(1, masked.positions)
        return logits.gather(1, masked.positions[..., None].expand(-1, -1, logits.shape[-1]))  # (B, P, V)

    def sample_replacements(self, gen_logits: torch.Tensor) -> torch.Tensor:
        return self.slot_samples if self.sample_everywhere else super().sample_replacements(gen_logits)


def _time_steps(step, steps: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _build_ours(variant: Variant, disc_config, gen_config) -> Electra:
    generator = ElectraGenerator(gen_config, variant.attention)
    discriminator = ElectraDiscriminator(disc_config, variant.attention)
    specials = [PAD, CLS, SEP, MASK]
    if variant.logits == "slots":
        model = Electra(generator, discriminator, mask_token_id=MASK, special_token_ids=specials)
    else:
        model = FullVocabularyElectra(
            generator,
            discriminator,
            sample_everywhere=variant.logits == "all+sampling",
            mask_token_id=MASK,
            special_token_ids=specials,
        )
    set_dropout_implementation(model, variant.dropout)
    return model


def run_worker(
    variant: Variant, preset: str, seq_len: int, batch_size: int, device_name: str, steps: int, warmup: int
) -> dict:
    """Time one variant in this process."""
    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    if device_name == "cpu" and variant.keep_freed_memory:
        keep_freed_memory()
    baseline = _rss_bytes()
    if device_name == "cuda":
        allow_tf32()  # as the trainer does: what stays fp32 runs on TF32 tensor cores
    dynamo = (
        TorchDynamoPlugin(backend="inductor", mode=variant.compile_mode, dynamic=False) if variant.compile else None
    )
    accelerator = Accelerator(cpu=device_name == "cpu", mixed_precision=variant.precision, dynamo_plugin=dynamo)
    device = accelerator.device
    torch.manual_seed(0)
    disc_config = preset_config(preset, vocab_size=variant.vocab_size)
    gen_config = generator_config(disc_config, GENERATOR_FRACTION[preset])
    model: torch.nn.Module
    if variant.kind == "ours":
        model = _build_ours(variant, disc_config, gen_config)
        optimizer = build_optimizer(model, AdamWConfig(implementation=variant.optimizer), lr=1e-4)
    else:
        model = ReferenceElectra(preset, variant.kind.split("-")[1])
        optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4, eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    batch = synthetic_batch(batch_size, seq_len, disc_config.vocab_size, device)
    if variant.kind == "ours":
        guard, skips = LossSpikeGuard(10.0, device), SkipCounts(device)

        def step():
            result = train_step(model, [batch], optimizer, scheduler, accelerator, 1.0, guard, skips)
            if variant.sync_every_step:
                result.metrics["loss"].item()
    else:

        def step():
            accelerator.backward(model(**batch))
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = _time_steps(step, steps, warmup, device)
    median = statistics.median(times)
    tokens = batch_size * seq_len
    flops = electra_train_flops_per_token(gen_config, disc_config, seq_len, max_predictions_for(seq_len, 0.15))
    return {
        "kind": variant.kind,
        "step_time_s": median,
        "tokens_per_s": tokens / median,
        "flops_per_token": flops,
        "achieved_flops": flops * tokens / median,
        "peak_mem_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
        "_baseline_rss": baseline,
    }


def _spawn(variant: Variant, args) -> dict:
    """Run one worker in a child process; CPU peak memory is its max RSS above its own start-up baseline."""
    settings = {
        "variant": asdict(variant),
        "preset": args.model,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "device_name": args.device,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "electra_pretrain.tools.bench", json.dumps(settings)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"benchmark worker {variant} failed with exit code {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    baseline = result.pop("_baseline_rss")
    if result["peak_mem_bytes"] is None:
        result["peak_mem_bytes"] = usage.ru_maxrss * 1024 - baseline
    return result


def measured_cpu_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def peak_flops(device: str, precision: str, stated: float | None) -> tuple[float, str]:
    if stated:
        return stated, "stated"
    if device == "cpu":
        return measured_cpu_peak_flops(), "measured fp32 2048^3 matmul"
    found = gpu_peak_flops(precision)
    if found is None:
        raise ValueError(f"unknown peak FLOP/s for {torch.cuda.get_device_name()}; pass --peak-flops")
    return found


def bench_model(args) -> dict:
    ours_variant = Variant(
        precision=args.precision,
        compile=args.compile,
        compile_mode=args.compile_mode,
        keep_freed_memory=args.keep_freed_memory,
        vocab_size=args.vocab_size,
    )
    ours = _spawn(ours_variant, args)
    peak, source = peak_flops(args.device, args.precision, args.peak_flops)
    result = {
        **{k: v for k, v in ours.items() if k != "kind"},
        "mfu": ours["achieved_flops"] / peak,
        "peak_flops": peak,
        "peak_flops_source": source,
        "model": args.model,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device": args.device,
        "keep_freed_memory": args.keep_freed_memory,
    }
    if args.reference:
        refs = [
            _spawn(replace(ours_variant, kind=kind, compile=False), args)
            for kind in ("reference-eager", "reference-sdpa")
        ]
        best = max(refs, key=lambda r: r["tokens_per_s"])
        result["reference"] = best
        result["speedup_vs_reference"] = ours["tokens_per_s"] / best["tokens_per_s"]
        result["memory_ratio_vs_reference"] = ours["peak_mem_bytes"] / best["peak_mem_bytes"]
    return result


class AblationRow(NamedTuple):
    label: str
    change: dict
    device: str | None = None  # only timed on this device type
    probe: bool = False  # timed, but not carried into the rows below


# The fast path one change at a time, each row on top of the rows above it.
ABLATION = [
    AblationRow(
        "naive: (B,L,V) logits sampled everywhere, eager attention, plain AdamW, torch dropout, .item() per step",
        dict(
            precision="no",
            attention="eager",
            optimizer="plain",
            dropout="torch",
            logits="all+sampling",
            sync_every_step=True,
            keep_freed_memory=False,
        ),
    ),
    AblationRow("+ sampling only at the prediction slots", dict(logits="all")),
    AblationRow("+ vocabulary projection only at the slots", dict(logits="slots")),
    AblationRow("+ SDPA attention", dict(attention="sdpa")),
    AblationRow("+ foreach AdamW (fused on CUDA)", dict(optimizer="auto")),
    AblationRow("+ no host sync inside the step", dict(sync_every_step=False)),
    AblationRow("+ packed-bits dropout", dict(dropout="auto"), device="cpu"),
    AblationRow("+ freed memory kept for the next step", dict(keep_freed_memory=True), device="cpu"),
    AblationRow("+ bf16 autocast", dict(precision="bf16"), device="cuda"),
    AblationRow("probe: vocabulary padded to a multiple of 64 (30522 -> 30528)", dict(vocab_size=30528), probe=True),
    AblationRow("+ torch.compile", dict(compile=True)),
]


def ablation_variants(device: str) -> list[tuple[AblationRow, Variant]]:
    """The ABLATION rows that apply to `device`, each with the variant it times (the rows above it applied)."""
    pairs, current = [], Variant()
    for row in ABLATION:
        if row.device not in (None, device):
            continue
        variant = replace(current, **row.change)
        pairs.append((row, variant))
        if not row.probe:
            current = variant
    return pairs


def bench_ablation(args) -> list[dict]:
    """Time every ABLATION row that applies to the device, each in its own child process."""
    return [
        {"change": row.label, "probe": row.probe, "variant": asdict(variant), **_spawn(variant, args)}
        for row, variant in ablation_variants(args.device)
    ]


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    print(json.dumps(run_worker(Variant(**settings.pop("variant")), **settings)))
