"""The fine-tuner: every seed of one task, then results.json, predictions/ and model/ (the command: finetune/app.py).

For each seed: a task model from the pretrained encoder (models.py, the kind's head), AdamW with layer-wise
learning-rate decay, 10% warmup then linear decay over trainer.max_steps or trainer.epochs passes, dynamically
padded batches (trainer.micro_batch_size with gradient accumulation), an evaluation on the validation set (and the
extra ones) after every epoch or every trainer.eval_every steps, early stopping after
trainer.early_stopping_patience evaluations without a better score. `trainer.keep=last` keeps each seed's final
model (the default: what google-research/electra and transformers report); `best` its best evaluation, which makes
the validation score optimistic and is labelled so. The seed with the best validation score gives output_dir/model.

SIGTERM / SIGUSR1 / Ctrl-C save the seed in progress (finetune/checkpoint.py) and exit with EXIT_STOPPED (75); the
same command resumes it exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from electra_pretrain.devices import allow_tf32, release_accelerator_state, resolve_precision
from electra_pretrain.finetune.batches import EpochSampler, TaskDataset
from electra_pretrain.finetune.checkpoint import ResumeState, set_rng_state
from electra_pretrain.finetune.config import FinetuneConfig
from electra_pretrain.finetune.data import TaskData, prepare_task_data
from electra_pretrain.finetune.kinds import Prediction
from electra_pretrain.finetune.models import TaskModel, build_task_model, check_start, model_folder
from electra_pretrain.finetune.outputs import (
    RESULTS_FILE,
    publish_predictions,
    remove_stale_outputs,
    write_model,
    write_predictions,
    write_results,
)
from electra_pretrain.jobs import EXIT_STOPPED, yaml_mapping
from electra_pretrain.optim import build_optimizer, build_scheduler, layerwise_parameter_groups
from electra_pretrain.run_lock import RunLock
from electra_pretrain.signals import StopFlag
from electra_pretrain.tokenizer import load_tokenizer, token_id
from electra_pretrain.tracking import Tracker


class Stopped(Exception):
    """A stop signal arrived; the seed in progress was saved."""


@dataclass
class SeedResult:
    seed: int
    validation: dict[str, float]  # the kept model's scores on the validation set
    kept_step: int
    kept_epoch: int
    evaluations: list[dict] = field(default_factory=list)  # every evaluation: step, epoch, train loss, scores
    train_examples: int = 0  # examples trained on (task.max_train_examples: the subsample)
    train_examples_per_s: float = 0.0
    extra_validation: dict[str, dict[str, float]] = field(default_factory=dict)
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # labelled test sets' scores
    stopped_early: bool = False
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)  # split -> the kept model's
    state: dict[str, torch.Tensor] | None = None  # the kept weights (CPU), until another seed is kept

    def summary(self) -> dict:
        row: dict = {
            "seed": self.seed,
            "kept_step": self.kept_step,
            "kept_epoch": self.kept_epoch,
            "validation": self.validation,
            "train_examples": self.train_examples,
            "train_examples_per_s": round(self.train_examples_per_s, 1),
            "stopped_early": self.stopped_early,
            "evaluations": self.evaluations,
        }
        if self.extra_validation:
            row["extra_validation"] = self.extra_validation
        if self.test:
            row["test"] = self.test
        return row


def evaluation_plan(eval_every: int | None) -> str:
    if eval_every is None:
        return "evaluation after every epoch"
    return f"evaluation every {eval_every} steps and at the end" if eval_every else "evaluation at the end"


def better(scores: dict[str, float], than: dict[str, float] | None, metrics: list[str]) -> bool:
    """Whether `scores` is at least as good as `than`: task.metrics compared in order, the first that differs
    decides; a full tie counts as better, so the later evaluation is kept."""
    if than is None:
        return True
    for metric in metrics:
        if scores[metric] != than[metric]:
            return scores[metric] > than[metric]
    return True


class FineTuner:
    """One seed of one task: build, train with evaluations, keep one model, predict the test sets."""

    def __init__(
        self,
        config: FinetuneConfig,
        data: TaskData,
        accelerator: Accelerator,
        seed: int,
        folder: Path,
        resume: ResumeState | None,
    ):
        self.config, self.data, self.accelerator, self.seed, self.resume = config, data, accelerator, seed, resume
        trainer = config.trainer
        self.accumulation = trainer.accumulation_steps(accelerator.num_processes)
        micro_batch = trainer.batch_size // (accelerator.num_processes * self.accumulation)
        set_seed(seed)  # the head's initial weights, then the order of the examples and dropout
        model = build_task_model(
            data.kind.model_class,
            folder,
            data.tokenizer,
            data.label_names,
            config.classifier_dropout,
            config.attn_implementation,
            pretrained=config.model_init == "pretrained",
            verify=config.verify_checksums,
        )
        self.lr = config.optim.lr_for(model.config.hidden_size)
        self.decay = config.optim.decay_for(model.config.hidden_size, model.config.num_hidden_layers)
        groups = layerwise_parameter_groups(
            model, self.lr, self.decay, config.optim.weight_decay, model.config.num_hidden_layers
        )
        optimizer = build_optimizer(model, config.optim, self.lr, groups)
        collate = data.kind.collate(token_id(data.tokenizer, "[PAD]"))
        subsample_seed = seed if config.task.subsample_seed is None else config.task.subsample_seed
        self.train_features = data.train_subsample(config.task.max_train_examples, subsample_seed)
        self.sampler = EpochSampler(
            len(self.train_features), seed, accelerator.process_index, accelerator.num_processes
        )
        # This process's micro-batches, moved to the device here: the sampler already shards (the loader is not
        # handed to accelerate, whose resharding would tie the order to the number of processes).
        # A private generator: starting an iterator draws a seed from it, and must not draw from the global one,
        # which decides dropout (a resumed run restores it and then starts an iterator the uninterrupted one did not).
        self.train_loader = torch.utils.data.DataLoader(
            TaskDataset(self.train_features),
            batch_size=micro_batch,
            sampler=self.sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )
        self.micro_batch = micro_batch
        evaluation = {
            split: torch.utils.data.DataLoader(
                TaskDataset(data.features[split], by_length=True),
                batch_size=trainer.eval_batch_size,
                collate_fn=collate,
            )
            for split in data.features
            if split != "train"
        }
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.eval_loaders = {split: accelerator.prepare(loader) for split, loader in evaluation.items()}
        self.steps_per_epoch = max(1, math.ceil(len(self.train_loader) / self.accumulation))
        self.steps = trainer.max_steps or self.steps_per_epoch * trainer.epochs
        self.warmup = round(config.optim.warmup_share * self.steps)
        # on the bare optimizer, stepped once per optimizer step (accelerate's wrapper would step it per process)
        self.scheduler = build_scheduler(optimizer, self.warmup, self.steps)

    @property
    def task_model(self) -> TaskModel:
        return self.accelerator.unwrap_model(self.model)

    def describe(self) -> str:
        trainer = self.config.trainer
        micro = trainer.batch_size // (self.accumulation * self.accelerator.num_processes)
        return (
            f"optimizer: lr {self.lr:g} (layer-wise decay {self.decay:g}), {self.steps} steps "
            f"({self.steps_per_epoch} per epoch; batch {trainer.batch_size} = {self.accelerator.num_processes} "
            f"process(es) x {micro} x {self.accumulation} accumulation), warmup {self.warmup}; "
            + evaluation_plan(trainer.eval_every)
            + (
                f", early stopping after {trainer.early_stopping_patience} evaluations without a better score"
                if trainer.early_stopping_patience
                else ""
            )
        )

    def run(self, tracker: Tracker, stop: StopFlag) -> SeedResult:
        accelerator, trainer = self.accelerator, self.config.trainer
        loop: dict[str, Any] = {
            "step": 0,
            "epoch": 1,
            "batches": 0,
            "loss_sum": 0.0,
            "loss_steps": 0,
            "examples": 0,
            "seconds": 0.0,
            "evaluations": [],
            "kept": None,
            "since_better": 0,
        }
        best_state: dict[str, torch.Tensor] | None = None
        saved = self.resume.current(self.seed, accelerator) if self.resume is not None else None
        if saved is not None:
            self.task_model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            set_rng_state(saved["rng"])  # dropout continues where it stopped
            loop, best_state = saved["loop"], saved["best"]
            accelerator.print(f"seed {self.seed}: resumed at step {loop['step']} (epoch {loop['epoch']})")
        progress = tqdm(
            total=self.steps,
            initial=loop["step"],
            desc=f"seed {self.seed}",
            dynamic_ncols=True,
            disable=not (accelerator.is_main_process and sys.stderr.isatty()),
        )
        log_every = max(1, self.steps_per_epoch // 4)
        stopping_early = False
        try:
            while loop["step"] < self.steps and not stopping_early:
                self.sampler.set_epoch(loop["epoch"], start=loop["batches"] * self.micro_batch)
                started = time.perf_counter()
                batches = iter(self.train_loader)
                while True:
                    micro = [
                        {k: v.to(accelerator.device) for k, v in batch.items()}
                        for batch in itertools.islice(batches, self.accumulation)
                    ]
                    if not micro:
                        break
                    loss, examples = self._step(micro)
                    loop["batches"] += len(micro)
                    loop["step"] += 1
                    loop["loss_sum"] += loss
                    loop["loss_steps"] += 1
                    loop["examples"] += examples * accelerator.num_processes
                    progress.update(1)
                    last = loop["step"] == self.steps
                    if trainer.eval_every is not None and (
                        last or (trainer.eval_every and loop["step"] % trainer.eval_every == 0)
                    ):
                        loop["seconds"] += time.perf_counter() - started
                        best_state, stopping_early = self._evaluate(tracker, loop, best_state)
                        started = time.perf_counter()
                    elif progress.disable and loop["step"] % log_every == 0:
                        accelerator.print(
                            f"seed {self.seed} step {loop['step']}/{self.steps} epoch {loop['epoch']}: "
                            f"train loss {loop['loss_sum'] / max(loop['loss_steps'], 1):.4f}"
                        )
                    if not last and stop.agreed(accelerator, may_sync=True):
                        loop["seconds"] += time.perf_counter() - started
                        self._save(loop, best_state)
                        raise Stopped
                    if last or stopping_early:
                        break
                loop["seconds"] += time.perf_counter() - started
                if trainer.eval_every is None and not stopping_early:
                    best_state, stopping_early = self._evaluate(tracker, loop, best_state)
                loop["epoch"] += 1
                loop["batches"] = 0
        finally:
            progress.close()
        return self._finish(loop, best_state, stopping_early)

    def _step(self, micro: list[dict]) -> tuple[float, int]:
        """One optimizer step over the micro-batches; (the mean loss, examples of this process)."""
        accelerator, model = self.accelerator, self.model
        model.train()
        total = torch.zeros((), device=accelerator.device)
        for i, batch in enumerate(micro):
            sync = contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                loss = self.task_model.loss(logits, batch) / len(micro)
                accelerator.backward(loss)
            total += loss.detach()
        accelerator.clip_grad_norm_(model.parameters(), self.config.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = accelerator.reduce(total, "mean").item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"seed {self.seed}: the training loss is not finite (try a lower optim.lr, or "
                "trainer.mixed_precision=bf16 instead of fp16)"
            )
        return value, sum(len(b["index"]) for b in micro)

    def _evaluate(self, tracker: Tracker, loop: dict, best_state):
        """Score the validation sets, log, keep; returns (the best weights so far with keep=best, whether early
        stopping ends the seed)."""
        config, accelerator = self.config, self.accelerator
        predictions = self.predict("validation")
        scores = self.data.score("validation", predictions)
        row = {
            "step": loop["step"],
            "epoch": loop["epoch"],
            "train_loss": loop["loss_sum"] / max(loop["loss_steps"], 1),
            "train_examples_per_s": loop["examples"] / max(loop["seconds"], 1e-9),
            **{f"validation/{k}": v for k, v in scores.items()},
        }
        extra = {}
        for split in self.data.extra_validation_splits():
            extra[split] = self.data.score(split, self.predict(split))
            row.update({f"{split}/{k}": v for k, v in extra[split].items()})
        loop["loss_sum"], loop["loss_steps"] = 0.0, 0
        loop["evaluations"].append(row)
        tracker.log(loop["step"], row)
        accelerator.print(
            f"seed {self.seed} step {loop['step']} epoch {loop['epoch']}: train loss "
            f"{row['train_loss']:.4f}, "
            + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
            + "".join(f"; {split} " + ", ".join(f"{k} {v:.4f}" for k, v in s.items()) for split, s in extra.items())
        )
        warning = self.data.kind.degenerate(predictions)
        if warning:
            accelerator.print(
                f"warning: seed {self.seed} step {loop['step']}: the model {warning} of the validation "
                "set (a constant answer: the scores are those of always giving it)"
            )
        kept = loop["kept"]
        improved = kept is None or better(scores, kept["validation"], config.task.metrics)
        strictly = kept is None or (improved and scores != kept["validation"])
        if config.trainer.keep == "last" or improved:
            loop["kept"] = {
                "validation": scores,
                "extra_validation": extra,
                "step": loop["step"],
                "epoch": loop["epoch"],
            }
            if config.trainer.keep == "best":
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.task_model.state_dict().items()}
        loop["since_better"] = 0 if strictly else loop["since_better"] + 1
        patience = config.trainer.early_stopping_patience
        stop_early = patience is not None and loop["since_better"] >= patience and loop["step"] < self.steps
        if stop_early:
            accelerator.print(f"seed {self.seed}: no better score in {patience} evaluations; stopping early")
        return best_state, stop_early

    def _save(self, loop: dict, best_state) -> None:
        assert self.resume is not None, "the main process keeps the resume state"
        self.resume.save_current(
            self.accelerator,
            self.seed,
            self.task_model.state_dict(),
            self.optimizer.state_dict(),
            self.scheduler.state_dict(),
            loop,
            best_state,
        )

    def _finish(self, loop: dict, best_state, stopped_early: bool) -> SeedResult:
        kept = loop["kept"]
        assert kept is not None, "at least one evaluation"
        state = (
            best_state
            if best_state is not None
            else {k: v.detach().to("cpu", copy=True) for k, v in self.task_model.state_dict().items()}
        )
        if best_state is not None:
            self.task_model.load_state_dict(best_state)
        result = SeedResult(
            self.seed,
            kept["validation"],
            kept["step"],
            kept["epoch"],
            loop["evaluations"],
            len({f.example for f in self.train_features}),
            loop["examples"] / max(loop["seconds"], 1e-9),
            kept["extra_validation"],
            stopped_early=stopped_early,
            state=state,
        )
        result.predictions["validation"] = self.predict("validation")
        for split in self.data.extra_validation_splits():
            result.predictions[split] = self.predict(split)
        for split in self.data.test_splits():
            result.predictions[split] = self.predict(split)
            if self.data.labelled(split):
                result.test[split] = self.data.score(split, result.predictions[split])
        return result

    @torch.no_grad()
    def predict(self, split: str) -> list[Prediction]:
        """The model's prediction for each example of the split, in file order (the kind reads the outputs)."""
        accelerator, kind = self.accelerator, self.data.kind
        self.model.eval()
        outputs: list = [None] * len(self.data.features[split])
        for batch in self.eval_loaders[split]:
            with accelerator.autocast():
                logits = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float()
            values = kind.batch_outputs(logits, batch, accelerator)
            index, values = accelerator.gather_for_metrics((batch["index"], values))
            for i, value in zip(index.tolist(), values.cpu().tolist()):
                outputs[i] = value
        return self.data.predictions(split, outputs)


def run_finetuning(config: FinetuneConfig, config_yaml: str) -> tuple[int, dict]:
    """Every seed, then results.json, predictions/ and model/ in output_dir; returns (the exit code: 0, or
    EXIT_STOPPED when a signal stopped the run, and the results)."""
    precision = resolve_precision(config.trainer.mixed_precision)
    allow_tf32()
    accelerator = Accelerator(mixed_precision=precision)
    out = Path(config.output_dir)
    lock = RunLock(out) if accelerator.is_main_process else None
    try:
        assert config.model_path, "FinetuneConfig checks it"
        folder = model_folder(config.model_path)
        started_from = check_start(folder, config.from_fine_tuned)
        tokenizer = load_tokenizer(config.tokenizer_path or folder)
        with accelerator.main_process_first():  # datasets' cache is written once
            data = prepare_task_data(config.task, tokenizer)
        accelerator.print(data.summary(folder, config) + f"\nprecision: {precision}")
        resume = ResumeState(out, config_yaml)
        resuming = resume.matches()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            if not resuming:
                removed = remove_stale_outputs(out)
                if removed:
                    accelerator.print(f"{out}: removed the outputs of an earlier run ({', '.join(removed)})")
                resume.start()
            (out / "config.yaml").write_text(config_yaml)
        accelerator.wait_for_everyone()
        finished, kept_seed = resume.finished()
        if finished:
            accelerator.print(f"resuming: seed(s) {[s['seed'] for s in finished]} finished earlier")
        stop = StopFlag()
        summaries = list(finished)
        kept_state = resume.kept_weights() if kept_seed is not None else None
        kept_summary = next((s for s in finished if s["seed"] == kept_seed), None)
        main = config.task.metrics[0]
        for seed in config.run_seeds():
            if any(s["seed"] == seed for s in finished):
                continue
            tuner = FineTuner(config, data, accelerator, seed, folder, resume)
            if not summaries:
                accelerator.print(tuner.describe())
            tracker = Tracker(
                config.logging,
                out / f"seed_{seed}",
                {**yaml_mapping(config_yaml), "seed": seed},
                enabled=accelerator.is_main_process,
                resumed_step=resume.current_step(seed),
            )
            try:
                result = tuner.run(tracker, stop)
            except Stopped:
                accelerator.print(f"stop requested: seed {seed} saved; rerun the same command to resume")
                return EXIT_STOPPED, {}
            finally:
                tracker.finish()
            if accelerator.is_main_process:
                write_predictions(out / f"seed_{seed}" / "predictions", result.predictions, data)
            summary = result.summary()
            summaries.append(summary)
            new_kept = kept_summary is None or summary["validation"][main] > kept_summary["validation"][main]
            if new_kept:
                kept_summary, kept_state = summary, result.state
            assert kept_summary is not None
            if accelerator.is_main_process:
                resume.seed_finished(summaries, kept_summary["seed"], result.state if new_kept else None)
            accelerator.free_memory()  # the accelerator lets go of this seed's model, optimizer and loaders
        assert kept_summary is not None and kept_state is not None
        results = summarise(config, summaries, kept_summary, started_from)
        if accelerator.is_main_process:
            finish_outputs(out, config, results, kept_summary, kept_state, data, tokenizer, folder)
            resume.finish()
        accelerator.print(
            f"validation ({len(summaries)} seed(s), median): "
            + ", ".join(f"{k} {v:.4f}" for k, v in results["validation"].items())
            + f" -> {out / RESULTS_FILE}"
        )
        return 0, results
    finally:
        if lock is not None:
            lock.release()
        accelerator.end_training()
        release_accelerator_state()


def summarise(config: FinetuneConfig, seeds: list[dict], kept: dict, started_from: dict) -> dict:
    metrics = list(seeds[0]["validation"])
    keep = config.trainer.keep
    summary: dict = {
        "task": config.task.name,
        "kind": config.task.kind,
        "model_path": config.model_path,
        "model_init": config.model_init,
        "started_from": started_from,
        "seeds": [s["seed"] for s in seeds],
        "metric": config.task.metrics[0],
        "selection": "last: each seed's final model"
        if keep == "last"
        else "best: each seed's best evaluation on the validation set, so its validation scores are optimistic",
        "validation": {m: statistics.median(s["validation"][m] for s in seeds) for m in metrics},
        "validation_mean": {m: statistics.mean(s["validation"][m] for s in seeds) for m in metrics},
        "kept_seed": kept["seed"],
        "per_seed": seeds,
    }
    for split in seeds[0].get("extra_validation", {}):
        summary[split] = {m: statistics.median(s["extra_validation"][split][m] for s in seeds) for m in metrics}
    for split in seeds[0].get("test", {}):
        summary[split] = {m: statistics.median(s["test"][split][m] for s in seeds) for m in metrics}
    return summary


def finish_outputs(
    out: Path, config: FinetuneConfig, results: dict, kept: dict, kept_state, data: TaskData, tokenizer, folder: Path
) -> None:
    publish_predictions(out, out / f"seed_{kept['seed']}" / "predictions", config)
    if config.trainer.save_model:
        model = build_task_model(
            data.kind.model_class,
            folder,
            tokenizer,
            data.label_names,
            config.classifier_dropout,
            config.attn_implementation,
            pretrained=False,
        )
        model.load_state_dict(kept_state)
        results["model"] = str(write_model(out, model, tokenizer, config, results, kept, data.label_names))
    write_results(out, results)
