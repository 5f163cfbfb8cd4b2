"""The pretraining `Trainer`: build, resume, then a loop of `train_step` with log / evaluate / save blocks.

A run stopped by a signal (SIGTERM, SIGUSR1, SIGINT) saves a checkpoint and exits with `EXIT_STOPPED`, so a
scheduler can tell "stopped, requeue me" from success (0) and failure (1). The command line is pretrain/app.py.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import TorchDynamoPlugin, set_seed
from tqdm.auto import tqdm

from electra_pretrain.allocator import keep_freed_memory
from electra_pretrain.devices import allow_tf32, release_accelerator_state, resolve_precision
from electra_pretrain.flops import gpu_peak_flops
from electra_pretrain.jobs import EXIT_STOPPED, yaml_mapping
from electra_pretrain.optim import build_optimizer, build_scheduler
from electra_pretrain.pretrain.build import build_model
from electra_pretrain.pretrain.checkpoint import Checkpointer
from electra_pretrain.pretrain.config import TrainConfig
from electra_pretrain.pretrain.evaluate import EVAL_SEED, Evaluator, held_out_batches
from electra_pretrain.pretrain.export import export_model
from electra_pretrain.pretrain.init_from import describe, init_folders, recipe_differences
from electra_pretrain.pretrain.metrics import IntervalMetrics, train_flops_per_token
from electra_pretrain.pretrain.objective import max_predictions_for
from electra_pretrain.pretrain.plot import plot_runs
from electra_pretrain.pretrain.sources import READ_STATS, documents
from electra_pretrain.pretrain.startup import config_changes, prepare_tokenizer, startup_summary
from electra_pretrain.pretrain.step import LossSpikeGuard, SkipCounts, train_step
from electra_pretrain.pretrain.stream import current_slot_states, default_num_workers, shut_down_workers, stream_states
from electra_pretrain.pretrain.training_data import prepared_tokenizer, training_data
from electra_pretrain.signals import StopFlag
from electra_pretrain.tracking import Tracker

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs


@dataclass
class TrainState:
    """The loop's counters; saved in every checkpoint's trainer_state.json."""

    step: int = 0
    tokens: int = 0  # non-pad tokens seen by all processes
    fp16_skips: int = 0
    spike_skips: int = 0
    loss_guard: dict | None = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, state.get(f.name, f.default))


class Trainer:
    def __init__(self, config: TrainConfig, config_yaml: str):
        self.config, self.config_yaml = config, config_yaml
        trainer = config.trainer
        # Accelerator reads the launcher's environment (ACCELERATE_USE_CPU, torchrun's ranks, the accelerate config).
        # Static shapes: every batch is padded to max_seq_length, so one graph serves the whole run.
        dynamo = (
            TorchDynamoPlugin(backend="inductor", mode=trainer.compile_mode, dynamic=False) if trainer.compile else None
        )
        self.precision = resolve_precision(trainer.mixed_precision)
        allow_tf32()
        self.accelerator = accelerator = Accelerator(mixed_precision=self.precision, dynamo_plugin=dynamo)
        if accelerator.device.type == "cpu" and trainer.keep_freed_memory and not keep_freed_memory():
            accelerator.print("trainer.keep_freed_memory: the C library is not glibc; allocator left as it is")
        self.accumulation = trainer.accumulation_steps(accelerator.num_processes)
        if trainer.compile and trainer.compile_mode in CUDA_GRAPH_MODES and self.accumulation > 1:
            raise ValueError(
                f"trainer.compile_mode={trainer.compile_mode} captures CUDA graphs, which crash or give wrong "
                f"gradients with gradient accumulation (here {self.accumulation} micro-batches per step); use "
                "trainer.compile_mode=default, or a trainer.micro_batch_size that needs no accumulation"
            )
        micro_batch = trainer.micro_batch(accelerator.num_processes)
        self.output_dir = Path(config.output_dir)
        self.progress: tqdm | None = None
        self.batches: object = None  # the dataloader's iterator while training
        self.checkpointer = Checkpointer(accelerator, self.output_dir, trainer)  # takes the run-folder lock
        try:
            self._build(micro_batch)
        except BaseException:
            self.checkpointer.close()
            raise

    def _build(self, micro_batch: int) -> None:
        config, config_yaml, trainer, accelerator = self.config, self.config_yaml, self.config.trainer, self.accelerator
        allowed_changes = config_changes(self.output_dir, config_yaml, trainer.allow_config_change)
        for change in allowed_changes:
            accelerator.print(f"config change allowed on resume: {change}")

        folders = init_folders(config.model)
        if config.data.path:
            self.tokenizer = prepared_tokenizer(config, accelerator, folders[0] if folders else None)
        else:
            self.tokenizer = prepare_tokenizer(
                config.tokenizer,
                config.data.source_specs(),
                self.output_dir,
                accelerator,
                config.seed,
                self.checkpointer.newest_tokenizer(),
                held_out_share=config.data.eval_share,
                pretrained=folders[0] if folders else None,
            )
        if folders:
            accelerator.print(describe(config.model, folders))
            differences = recipe_differences(folders, yaml_mapping(config_yaml))
            if differences and differences[1]:
                accelerator.print(
                    f"notice: continuing from an export trained with another recipe ({differences[0]}): "
                    + "; ".join(differences[1])
                    + " (override those keys to continue its recipe)"
                )
        set_seed(config.seed)  # identical initial weights on every process
        model = build_model(config.model, self.tokenizer)
        positions = model.encoder_model.config.max_position_embeddings
        if config.data.max_seq_length > positions:
            raise ValueError(
                f"data.max_seq_length={config.data.max_seq_length} exceeds model.max_position_embeddings={positions}"
            )
        flops = train_flops_per_token(
            model,
            config.data.max_seq_length,
            max_predictions_for(config.data.max_seq_length, config.model.mask_prob),
        )
        self.flops_per_token = flops
        # Every position of every batch is computed, padding included: that is what a step costs.
        self.flops_per_step = flops * trainer.global_batch_size * config.data.max_seq_length
        if trainer.max_flops is not None:
            trainer.max_steps = trainer.steps_for_budget(self.flops_per_step)
            accelerator.print(
                f"budget:        trainer.max_flops={trainer.max_flops:.3g}: {trainer.max_steps} steps of "
                f"{self.flops_per_step:.3g} FLOPs"
            )
        optimizer = build_optimizer(model, config.optim, config.optim.lr)
        warmup, notice = config.optim.warmup_for(trainer.max_steps)
        if notice:
            accelerator.print(f"notice: {notice}")
        self.scheduler = build_scheduler(optimizer, warmup, trainer.max_steps)
        accelerator.print(
            startup_summary(
                config, model, accelerator.num_processes, micro_batch, self.accumulation, flops, warmup, self.precision
            )
        )
        # MFU is logged only where the device's peak is known.
        data_sheet = gpu_peak_flops(self.precision) if accelerator.device.type == "cuda" else None
        self.peak_flops = trainer.peak_flops or (data_sheet[0] if data_sheet else None)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        set_seed(config.seed, device_specific=True)  # masking and dropout differ between processes
        workers = config.data.num_workers
        self.num_workers = default_num_workers(accelerator.device) if workers is None else workers
        self.micro_batch = micro_batch
        self.stream, self.dataloader = training_data(config, self.tokenizer, accelerator, micro_batch, self.num_workers)
        self.evaluator = self._held_out_evaluator()
        self.held_out: dict[str, float] = {}
        self.guard = LossSpikeGuard(trainer.loss_spike_factor, accelerator.device)
        self.skips = SkipCounts(accelerator.device)
        self.checked_step = 0  # the step at which the skip counts were last read
        self.state = TrainState()
        self._resume()
        if accelerator.is_main_process:  # only now that start-up succeeded: a failed start never blocks a rerun
            (self.output_dir / "config.yaml").write_text(config_yaml)
        self.tracker = Tracker(
            config.logging,
            self.output_dir,
            yaml_mapping(config_yaml),
            enabled=accelerator.is_main_process,
            resumed_step=self.state.step,
        )
        self.metrics = IntervalMetrics(accelerator.device, trainer.log_every, model.logged)

    def _held_out_evaluator(self) -> Evaluator | None:
        data = self.config.data
        specs = data.eval_specs()
        if not specs:
            return None
        rows = documents(
            specs, seed=EVAL_SEED, shuffle_files=False, held_out_share=data.eval_share, held_out=bool(data.eval_share)
        )
        batches = held_out_batches(
            (row["text"] for row in rows), self.tokenizer, data.max_seq_length, self.config.trainer.eval_tokens
        )
        evaluator = Evaluator(batches, self.tokenizer, self.accelerator)
        self.accelerator.print(f"held-out evaluation: {evaluator.held_out_tokens} tokens in {len(batches)} batches")
        return evaluator

    def _resume(self) -> None:
        resumed = self.checkpointer.resume(self.model, self.optimizer, self.scheduler, self.tokenizer)
        if resumed is None:
            return
        self.state.load_state_dict(resumed.train_state)
        if self.state.loss_guard is not None:
            self.guard.load_state_dict(self.state.loss_guard)
        self.checked_step = self.state.step
        self._notice_schedule_change()
        layout = (self.accelerator.num_processes, max(1, self.num_workers))
        states = [resumed.data_state] if resumed.data_state is not None else resumed.data_states()
        saved = (resumed.num_processes, len(stream_states(states[0])))
        if resumed.data_state is not None and saved == layout:
            self.dataloader.load_state_dict(resumed.data_state)  # bit-exact
        else:
            if len(states) < resumed.num_processes:
                states = resumed.data_states()
            # each worker's state as of the last batch handed out (not its last snapshot): nothing is repeated
            slots = [s for state in states for s in current_slot_states(state, self.micro_batch, self.stream.advance)]
            self.stream.resume_elsewhere(slots)
            if resumed.data_state is None:  # another process count: the saved RNG states belong to other ranks
                set_seed(self.config.seed + self.state.step, device_specific=True)
            self.accelerator.print(
                f"data: resuming {saved[0]} process(es) x {saved[1]} reader(s) on {layout[0]} x {layout[1]}: every "
                "document already read is skipped and the examples built but not yet used are dealt out again, so "
                "nothing is repeated or left out; the order of examples (and masking) differs from an "
                "uninterrupted run"
            )
        self.accelerator.print(f"resumed from {resumed.path} at step {self.state.step}")

    def _notice_schedule_change(self) -> None:
        """A resume whose schedule differs (trainer.max_steps, optim.lr, the warmup) changes the learning rate at once
        from the saved one: say so, with both rates, rather than let the curve jump unexplained."""
        step = self.state.step
        saved = float(self.scheduler.get_last_lr()[0])
        now = float(self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](step))
        if abs(now - saved) > 1e-6 * max(abs(saved), 1e-12):
            self.accelerator.print(
                f"notice: the schedule changed on resume (trainer.max_steps={self.config.trainer.max_steps}, optim.lr="
                f"{self.config.optim.lr}): the learning rate at step {step} goes from {saved:.3g}, as saved, to "
                f"{now:.3g}"
            )

    def run(self) -> int:
        """Train, then release the run folder and the tracker whatever happened; returns the exit code."""
        try:
            return self.train()
        finally:
            self.close()

    def train(self) -> int:
        """Train to trainer.max_steps, or until a stop signal; returns the exit code (0, or EXIT_STOPPED)."""
        config, accelerator, state = self.config.trainer, self.accelerator, self.state
        if state.step >= config.max_steps:
            accelerator.print(
                f"nothing to do: {self.output_dir} is already at step {state.step} of trainer.max_steps="
                f"{config.max_steps}; to train further raise trainer.max_steps (with trainer.allow_config_change="
                "[trainer.max_steps]), or give a new run its own output_dir"
            )
        stop = StopFlag()
        # A progress bar on a terminal; in a log file (a SLURM .out) a plain line per log step instead.
        self.progress = tqdm(
            total=config.max_steps,
            initial=state.step,
            dynamic_ncols=True,
            desc="train",
            disable=not (accelerator.is_main_process and sys.stderr.isatty()),
        )
        self.batches = batches = iter(self.dataloader)
        self.model.train()
        stopping = False
        first_step, started = True, time.perf_counter()
        while state.step < config.max_steps and not stopping:
            state.step += 1
            fetching = time.perf_counter()
            micro = [
                {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
                for _ in range(self.accumulation)
            ]
            self.metrics.throughput.waited(time.perf_counter() - fetching)
            result = train_step(
                self.model,
                micro,
                self.optimizer,
                self.scheduler,
                accelerator,
                self.config.optim.max_grad_norm,
                self.guard,
                self.skips,
            )
            self.metrics.add(result)
            if first_step:  # start-up, the workers' first batches, compilation: not the training rate
                tokens = accelerator.reduce(result.tokens.detach().clone(), "sum").item()
                self.metrics.throughput.exclude(time.perf_counter() - started, tokens)
                first_step = False
            self.progress.update(1)
            last = state.step == config.max_steps
            log_due = self.metrics.should_log(state.step, last)
            eval_due = self.evaluator is not None and (
                last or (config.eval_every and state.step % config.eval_every == 0)
            )
            # A step that neither logs, evaluates nor saves makes no host sync; the others read the skip counts.
            stopping = stop.agreed(accelerator, may_sync=log_due)
            save_due = self.checkpointer.due(state.step, force=last or stopping)
            healthy = self._check_skips() if log_due or eval_due or save_due else True
            if log_due:
                self._log()
            paused = time.perf_counter()
            if eval_due:
                self._evaluate()
            if self.checkpointer.should_save(state.step, last or stopping, healthy):
                self._save()
            self.metrics.throughput.exclude(time.perf_counter() - paused)
        self.progress.close()
        if stopping:
            saved = "saved" if not self.checkpointer.pending else "did not save (loss spike)"
            accelerator.print(
                f"stop requested: {saved} step {state.step} and exiting; rerun the same command to resume"
            )
        else:
            self._finish()
        return EXIT_STOPPED if stopping else 0

    def _check_skips(self) -> bool:
        """Read the updates skipped since the last check (one host sync) and act on them; returns whether the
        latest step was applied (a checkpoint is never taken on a skipped step)."""
        config, state = self.config.trainer, self.state
        counts, longest, current = self.skips.read()
        since, self.checked_step = self.checked_step + 1, state.step
        steps = f"step {state.step}" if since == state.step else f"steps {since}-{state.step}"
        if counts["non_finite"] and self.accelerator.scaler is None:
            raise FloatingPointError(
                f"{steps}: {counts['non_finite']} step(s) with a non-finite loss or gradient "
                "norm; their updates were skipped, so the weights stay finite; stopped (try "
                "bf16, a lower lr or an earlier checkpoint with trainer.resume_from=step_<N>)"
            )
        if counts["loss_spike"]:
            message = (
                f"{steps}: {counts['loss_spike']} loss spike(s) over {self.guard.factor:g} x the running mean "
                f"loss {float(self.guard.mean):.4g}"
            )
            if config.loss_spike_action == "stop":
                raise FloatingPointError(
                    f"{message}; stopped, the spiking updates not applied (trainer.loss_spike_action)"
                )
            self.accelerator.print(f"{message}; updates skipped")
        if longest > config.max_skips_in_a_row:
            raise FloatingPointError(
                f"{steps}: {longest} skipped steps in a row ({counts}); the run cannot recover "
                "(try bf16, a lower lr or an earlier checkpoint with "
                "trainer.resume_from=step_<N>)"
            )
        if any(counts.values()):
            resync = getattr(getattr(self.optimizer, "optimizer", None), "resync_step_count", None)
            if resync is not None:
                resync()
        state.fp16_skips += counts["fp16_overflow"]
        state.spike_skips += counts["loss_spike"]
        return current == 0

    def _log(self) -> None:
        record, tokens = self.metrics.reduce(self.accelerator)
        self.state.tokens += tokens
        record.update(
            lr=float(self.scheduler.get_last_lr()[0]),
            tokens=self.state.tokens,
            flops=self.state.step * self.flops_per_step,
            fp16_skips=self.state.fp16_skips,
            spike_skips=self.state.spike_skips,
        )
        if self.accelerator.device.type == "cuda":
            record["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        if self.peak_flops:
            # tokens_per_s counts every process's tokens; the peak is one process's device.
            record["mfu"] = (
                record["tokens_per_s"] * self.flops_per_token / (self.peak_flops * self.accelerator.num_processes)
            )
        self.tracker.log(self.state.step, record)
        shown = {"loss": "loss", "mlm": "mlm_loss", "rtd": "rtd_loss"}
        summary = {short: f"{record[name]:.3f}" for short, name in shown.items() if name in record}
        summary.update(lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
        assert self.progress is not None, "logging happens inside train()"
        if self.progress.disable:
            self.accelerator.print(
                f"step {self.state.step}/{self.config.trainer.max_steps} "
                + " ".join(f"{k} {v}" for k, v in summary.items())
            )
        else:
            self.progress.set_postfix(summary)

    def _evaluate(self) -> dict[str, float]:
        assert self.evaluator is not None, "evaluations are due only with held-out data"
        results = self.evaluator(self.accelerator.unwrap_model(self.model, keep_torch_compile=False))
        self.held_out = results  # the latest, for the exports' model cards
        self.tracker.log(
            self.state.step,
            {**{f"eval/{k}": v for k, v in results.items()}, "flops": self.state.step * self.flops_per_step},
        )
        self.accelerator.print(f"eval step {self.state.step}: " + " ".join(f"{k} {v:.4f}" for k, v in results.items()))
        return results

    def _save(self) -> None:
        self.state.loss_guard = self.guard.state_dict()
        self.checkpointer.save(
            self.state.step,
            self.model,
            self.optimizer,
            self.scheduler,
            self.dataloader.state_dict(),
            self.state.state_dict(),
            self.config_yaml,
            self.tokenizer,
        )

    def _finish(self) -> None:
        if READ_STATS:
            self.accelerator.print(f"data: skipped or repaired {dict(READ_STATS)} (the warnings above name the files)")
        if self.accelerator.is_main_process:
            curves = plot_runs([self.output_dir], self.output_dir / "curves.png")
            self.accelerator.print(f"curves: {curves} (electra-pretrain plot RUN_DIR ... overlays several runs)")
        if self.config.trainer.export and self.accelerator.is_main_process:
            out = self.output_dir / "export"
            provenance = {
                "step": self.state.step,
                "tokens": self.state.tokens,
                "held_out": self.held_out,
                "command": " ".join(["python", *sys.argv]),
            }
            folders = export_model(
                self.accelerator.unwrap_model(self.model, keep_torch_compile=False),
                self.tokenizer,
                out,
                self.config_yaml,
                provenance,
            )
            self.accelerator.print(f"exported {' and '.join(str(folder) for folder in folders)}")
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()  # before any error line, so that the line stands on its own
        self.tracker.finish()
        self.checkpointer.close()
        shut_down_workers(self.batches)  # also when an exception's traceback still holds the iterator
        self.batches = self.dataloader = None
        self.accelerator.end_training()
        release_accelerator_state()
