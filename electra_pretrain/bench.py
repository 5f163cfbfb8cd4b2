"""Throughput benchmarks: our training step against a transformers-built peer, and the data pipeline.

Each model benchmark runs in a child process of its own so that peak memory is that run's alone: on CUDA the
allocator's peak, on CPU the child's peak RSS minus its RSS before the model was built.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

# Generator width per preset, as in configs/model/*.yaml.
GENERATOR_FRACTION = {"tiny": 0.5, "small": 0.25, "base": 1 / 3, "large": 0.25}
PAD, CLS, SEP, MASK = 0, 101, 102, 103  # the BERT uncased layout


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, device: torch.device) -> dict:
    """Packed rows (no padding, as the example builder produces at full length): [CLS] A [SEP] B [SEP]."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, vocab_size, (batch_size, seq_len), generator=g)
    input_ids[:, 0], input_ids[:, seq_len // 2], input_ids[:, -1] = CLS, SEP, SEP
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, seq_len // 2 + 1:] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device),
            "token_type_ids": token_type_ids.to(device)}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ReferenceElectra(torch.nn.Module):
    """How existing reproductions build ELECTRA from transformers: shared embeddings, full-vocabulary MLM logits."""

    def __init__(self, preset: str, attn_implementation: str, mask_prob: float = 0.15):
        super().__init__()
        import transformers

        from electra_pretrain.modeling import generator_config, preset_config

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


def run_worker(kind: str, preset: str, seq_len: int, batch_size: int, precision: str, device_name: str,
               steps: int, warmup: int, compile_model: bool) -> dict:
    """Time one implementation in this process; `kind` is ours, reference-eager or reference-sdpa."""
    from accelerate import Accelerator

    from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator, generator_config, preset_config
    from electra_pretrain.objective import Electra, max_predictions_for
    from electra_pretrain.optim import parameter_groups
    from electra_pretrain.tracking import electra_train_flops_per_token
    from electra_pretrain.train import train_step

    baseline = _rss_bytes()
    accelerator = Accelerator(cpu=device_name == "cpu", mixed_precision=precision)
    device = accelerator.device
    torch.manual_seed(0)
    disc_config = preset_config(preset)
    gen_config = generator_config(disc_config, GENERATOR_FRACTION[preset])
    if kind == "ours":
        model = Electra(ElectraGenerator(gen_config), ElectraDiscriminator(disc_config), mask_token_id=MASK,
                        special_token_ids=[PAD, CLS, SEP, MASK])
        fused = "fused" if device.type == "cuda" else "foreach"
    else:
        model = ReferenceElectra(preset, kind.split("-")[1])
        fused = "plain"
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4, eps=1e-6, fused=fused == "fused" or None,
                                  foreach=fused == "foreach" or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if compile_model:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    batch = synthetic_batch(batch_size, seq_len, disc_config.vocab_size, device)
    if kind == "ours":
        def step():
            train_step(model, [batch], optimizer, scheduler, accelerator, 1.0, 0)
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
    return {"kind": kind, "step_time_s": median, "tokens_per_s": tokens / median, "flops_per_token": flops,
            "achieved_flops": flops * tokens / median,
            "peak_mem_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
            "_baseline_rss": baseline}


def _spawn(kind: str, args) -> dict:
    """Run one worker in a child process; CPU peak memory is its max RSS above its own start-up baseline."""
    command = [sys.executable, "-m", "electra_pretrain.bench", "--worker", kind, "--model", args.model,
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--precision", args.precision,
               "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.compile:
        command.append("--compile")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"benchmark worker {kind!r} failed with exit code {child.returncode}")
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
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


# Dense bf16 / fp16 tensor-core peaks (no sparsity) of common GPUs, from the vendors' data sheets.
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "V100": 125e12}


def peak_flops(device: str, precision: str, stated: float | None) -> tuple[float, str]:
    if stated:
        return stated, "stated"
    if device == "cpu":
        return measured_cpu_peak_flops(), "measured fp32 2048^3 matmul"
    name = torch.cuda.get_device_name()
    for key, value in GPU_PEAK_FLOPS.items():
        if key in name:
            return (value if precision != "no" else value / 2), f"{name} data sheet"
    raise ValueError(f"unknown peak FLOP/s for {name}; pass --peak-flops")


def bench_model(args) -> dict:
    ours = _spawn("ours", args)
    peak, source = peak_flops(args.device, args.precision, args.peak_flops)
    result = {**{k: v for k, v in ours.items() if k != "kind"}, "mfu": ours["achieved_flops"] / peak,
              "peak_flops": peak, "peak_flops_source": source, "model": args.model, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "precision": args.precision, "device": args.device}
    if args.reference:
        refs = [_spawn(kind, args) for kind in ("reference-eager", "reference-sdpa")]
        best = max(refs, key=lambda r: r["tokens_per_s"])
        result["reference"] = best
        result["speedup_vs_reference"] = ours["tokens_per_s"] / best["tokens_per_s"]
        result["memory_ratio_vs_reference"] = ours["peak_mem_bytes"] / best["peak_mem_bytes"]
    return result


def bench_data(files: list[str], document_boundary: str, tokenizer_path: str | None, vocab_size: int,
               seq_len: int, examples: int) -> dict:
    from electra_pretrain.data import ExampleStream, StreamConfig
    from electra_pretrain.sources import SourceSpec, documents
    from electra_pretrain.tokenizer import load_tokenizer, train_tokenizer

    specs = [SourceSpec(files=files, document_boundary=document_boundary)]
    if tokenizer_path:
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        tokenizer = train_tokenizer((r["text"] for r in documents(specs, 0)), vocab_size=vocab_size,
                                    show_progress=False)
    stream = ExampleStream(lambda epoch: documents(specs, seed=epoch), tokenizer, StreamConfig(seq_len))
    start = time.perf_counter()
    tokens = 0
    for example in itertools.islice(stream, examples):
        tokens += len(example.input_ids)
    elapsed = time.perf_counter() - start
    return {"examples": examples, "tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed,
            "padding_share": 1 - tokens / (examples * seq_len), "threads": torch.get_num_threads()}


def _worker_main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    for name, kind in (("--model", str), ("--seq-len", int), ("--batch-size", int), ("--precision", str),
                       ("--device", str), ("--steps", int), ("--warmup", int)):
        parser.add_argument(name, type=kind, required=True)
    parser.add_argument("--compile", action="store_true")
    a = parser.parse_args(argv)
    print(json.dumps(run_worker(a.worker, a.model, a.seq_len, a.batch_size, a.precision, a.device, a.steps,
                                a.warmup, a.compile)))


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
