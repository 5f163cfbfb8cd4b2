"""`accelerate launch train.py <overrides>`: build, resume, then a loop of `train_step` with log / save blocks."""

from __future__ import annotations

import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from electra_pretrain.allocator import keep_freed_memory
from electra_pretrain.checkpoint import export_models, resume_latest, save_checkpoint
from electra_pretrain.config import TrainConfig, register_configs
from electra_pretrain.data import ExampleStream, StreamConfig, make_dataloader
from electra_pretrain.objective import Electra, build_electra, max_predictions_for
from electra_pretrain.optim import build_optimizer, build_scheduler
from electra_pretrain.run_setup import check_config_unchanged, prepare_tokenizer, startup_summary
from electra_pretrain.sources import READ_STATS, documents
from electra_pretrain.tracking import Throughput, Tracker, electra_train_flops_per_token

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
METRICS = ("loss", "mlm_loss", "rtd_loss", "gen_accuracy", "disc_accuracy", "replaced_fraction", "disc_precision",
           "disc_recall")


@dataclass
class StepResult:
    metrics: dict[str, torch.Tensor]  # device scalars summed over micro-batches (no host sync)
    tokens: torch.Tensor  # non-pad tokens of this process in this step
    grad_norm: torch.Tensor
    skipped: bool  # fp16 overflow: the optimizer step was skipped by the loss scaler


def train_step(model: Electra, batches: list[dict[str, torch.Tensor]], optimizer, scheduler,
               accelerator: Accelerator, max_grad_norm: float, step: int) -> StepResult:
    """One optimizer step over `batches` (the gradient-accumulation micro-batches of this process)."""
    sums = {name: torch.zeros((), device=accelerator.device) for name in METRICS}
    tokens = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(batches):
        # Gradients are all-reduced only on the last micro-batch.
        sync = contextlib.nullcontext() if i == len(batches) - 1 else accelerator.no_sync(model)
        with sync:
            out = model(**batch)
            accelerator.backward(out.loss / len(batches))
        for name, value in (("loss", out.loss), ("mlm_loss", out.mlm_loss), ("rtd_loss", out.rtd_loss),
                            *out.metrics.items()):
            if name in sums:
                sums[name] += value.detach()
        tokens += out.metrics["tokens"]
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    # The one host sync of a step: never let a non-finite update reach the weights.
    finite = bool(torch.isfinite(sums["loss"]) & torch.isfinite(grad_norm))
    if not finite and accelerator.scaler is None:
        raise FloatingPointError(f"step {step}: non-finite loss ({sums['loss'].item() / len(batches)}) or gradient "
                                 f"norm ({grad_norm.item()}); stopped before the optimizer step")
    optimizer.step()  # with fp16 the loss scaler skips a step whose gradients overflowed
    skipped = accelerator.optimizer_step_was_skipped
    if not skipped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, tokens, grad_norm.detach(), skipped)


class StopFlag:
    """SIGTERM / SIGUSR1 (preemption, SLURM's warning signal) ask the loop to save and exit cleanly."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def agreed(self, accelerator: Accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor(float(self.requested), device=accelerator.device)
        return bool(accelerator.reduce(flag, "max") > 0)


@dataclass
class RunState:
    step: int = 0
    tokens: int = 0  # non-pad tokens seen by all processes
    fp16_skips: int = 0
    skips_in_a_row: int = 0


def run(config: TrainConfig, config_yaml: str) -> Path:
    # Accelerator reads the launcher's environment (ACCELERATE_USE_CPU, torchrun's ranks, the accelerate config).
    accelerator = Accelerator(mixed_precision=config.trainer.mixed_precision,
                              dynamo_backend="inductor" if config.trainer.compile else "no")
    if accelerator.device.type == "cpu" and config.trainer.keep_freed_memory:
        if not keep_freed_memory():
            accelerator.print("trainer.keep_freed_memory: the C library is not glibc; allocator left as it is")
    accumulation = config.trainer.accumulation_steps(accelerator.num_processes)
    micro_batch = config.trainer.micro_batch(accelerator.num_processes)
    output_dir = Path(config.output_dir)
    check_config_unchanged(output_dir, config_yaml, config.trainer.allow_config_change)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(config_yaml)

    specs = config.data.source_specs()
    tokenizer = prepare_tokenizer(config.tokenizer, specs, output_dir, accelerator, config.seed)
    set_seed(config.seed)  # identical initial weights on every process
    model = build_electra(config.model, tokenizer)
    if config.data.max_seq_length > model.discriminator.config.max_position_embeddings:
        raise ValueError(f"data.max_seq_length={config.data.max_seq_length} exceeds "
                         f"model.max_position_embeddings={model.discriminator.config.max_position_embeddings}")
    optimizer = build_optimizer(model, config.optim, accelerator.device)
    scheduler = build_scheduler(optimizer, config.optim, config.trainer.max_steps)
    flops = electra_train_flops_per_token(model.generator.config, model.discriminator.config,
                                          config.data.max_seq_length,
                                          max_predictions_for(config.data.max_seq_length, config.model.mask_prob))
    accelerator.print(startup_summary(config, model, accelerator.num_processes, micro_batch, accumulation, flops))
    model, optimizer = accelerator.prepare(model, optimizer)
    set_seed(config.seed, device_specific=True)  # masking and dropout differ between processes

    stream = ExampleStream(lambda epoch: documents(specs, seed=config.seed + epoch), tokenizer,
                           StreamConfig(config.data.max_seq_length, config.data.shuffle_buffer, config.seed),
                           accelerator.process_index, accelerator.num_processes)
    run_state = RunState()
    resumed = resume_latest(accelerator, output_dir / "checkpoints", model, optimizer, scheduler, tokenizer)
    if resumed is not None:
        checkpoint, saved, data_state = resumed
        run_state.step, run_state.tokens, run_state.fp16_skips = saved["step"], saved["tokens"], saved["fp16_skips"]
        if config.data.num_workers == 0:
            stream.load_state_dict(data_state)
        accelerator.print(f"resumed from {checkpoint} at step {run_state.step}")
    if config.data.num_workers > 0:
        accelerator.print(f"note: data.num_workers={config.data.num_workers}: the data position is not "
                          "checkpointed; a resumed run reads its data afresh")
    batches = iter(make_dataloader(stream, micro_batch, tokenizer.token_to_id("[PAD]"), config.data.num_workers))

    tracker = Tracker(config.logging, output_dir, OmegaConf.to_container(OmegaConf.create(config_yaml)),
                      enabled=accelerator.is_main_process)
    stop = StopFlag()
    progress = tqdm(total=config.trainer.max_steps, initial=run_state.step, disable=not accelerator.is_main_process,
                    dynamic_ncols=True, desc="train")
    throughput = Throughput()
    interval_tokens = torch.zeros((), device=accelerator.device)
    interval_sums = {name: torch.zeros((), device=accelerator.device) for name in METRICS}
    interval_steps = 0
    model.train()
    while run_state.step < config.trainer.max_steps:
        micro = [{k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
                 for _ in range(accumulation)]
        result = train_step(model, micro, optimizer, scheduler, accelerator, config.optim.max_grad_norm,
                            run_state.step + 1)
        run_state.step += 1
        run_state.skips_in_a_row = run_state.skips_in_a_row + 1 if result.skipped else 0
        run_state.fp16_skips += int(result.skipped)
        if run_state.skips_in_a_row > config.trainer.max_fp16_skips_in_a_row:
            raise FloatingPointError(f"step {run_state.step}: {run_state.skips_in_a_row} fp16 overflow skips in a "
                                     "row; the loss scale cannot recover (try bf16 or a lower lr)")
        interval_tokens += result.tokens
        for name in METRICS:
            interval_sums[name] += result.metrics[name] / accumulation
        interval_steps += 1
        progress.update(1)

        last = run_state.step == config.trainer.max_steps
        if run_state.step % config.trainer.log_every == 0 or last:
            values = accelerator.reduce(torch.stack([*interval_sums.values()]), "mean") / interval_steps
            tokens = int(accelerator.reduce(interval_tokens, "sum").item())
            run_state.tokens += tokens
            record = dict(zip(METRICS, values.tolist()))
            record.update(lr=scheduler.get_last_lr()[0], grad_norm=float(result.grad_norm),
                          tokens_per_s=throughput.rate(tokens), tokens=run_state.tokens,
                          fp16_skips=run_state.fp16_skips)
            tracker.log(run_state.step, record)
            progress.set_postfix(loss=f"{record['loss']:.3f}", mlm=f"{record['mlm_loss']:.3f}",
                                 rtd=f"{record['rtd_loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            interval_tokens.zero_()
            for value in interval_sums.values():
                value.zero_()
            interval_steps = 0
        stopping = stop.agreed(accelerator)
        if run_state.step % config.trainer.save_every == 0 or last or stopping:
            save_checkpoint(accelerator, output_dir / "checkpoints", run_state.step, model, optimizer, scheduler,
                            stream.state_dict(), {"tokens": run_state.tokens, "fp16_skips": run_state.fp16_skips},
                            config_yaml, tokenizer, config.trainer.keep_last)
        if stopping:
            accelerator.print(f"stop requested: saved step {run_state.step} and exiting; rerun the same command "
                              "to resume")
            break
    progress.close()
    if READ_STATS:
        accelerator.print(f"data: skipped or repaired {dict(READ_STATS)} (see warnings above for the files)")
    if run_state.step >= config.trainer.max_steps and config.trainer.export and accelerator.is_main_process:
        export_models(accelerator.unwrap_model(model), tokenizer, output_dir / "export", config_yaml)
        accelerator.print(f"exported {output_dir / 'export' / 'discriminator'} and {output_dir / 'export' / 'generator'}")
    accelerator.wait_for_everyone()
    tracker.finish()
    accelerator.end_training()
    return output_dir


register_configs()


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        config = OmegaConf.to_object(cfg)
        run(config, OmegaConf.to_yaml(cfg, resolve=True))
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
