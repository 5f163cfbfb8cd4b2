"""The fine-tuner: every seed of one task, then results.json, predictions/ and model/ (the command: finetune/app.py).

For each seed: a task model from the pretrained encoder (models.py, the kind's head), AdamW with layer-wise learning-rate decay,
10% warmup then linear decay, `trainer.epochs` passes over the shuffled training set in dynamically padded batches,
a validation score after every epoch; the best (or last) epoch is kept. Then output_dir holds
  results.json             {"validation": {metric: median over seeds}, "validation_mean": ..., "per_seed": [...]}
  predictions/<split>.jsonl of the kept model (the seed with the best validation score), in file order
  model/                   that model as a transformers folder, with the tokenizer
  seed_<s>/                each seed's metrics.jsonl and predictions
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from electra_pretrain.finetune.batches import TaskDataset
from electra_pretrain.finetune.config import FinetuneConfig
from electra_pretrain.finetune.data import TaskData, prepare_task_data
from electra_pretrain.finetune.kinds import Prediction
from electra_pretrain.finetune.models import TaskModel, build_task_model, model_folder
from electra_pretrain.jobs import yaml_mapping
from electra_pretrain.optim import build_optimizer, build_scheduler, layerwise_parameter_groups
from electra_pretrain.run_lock import RunLock
from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer, token_id
from electra_pretrain.tracking import Tracker

RESULTS_FILE = "results.json"


@dataclass
class SeedResult:
    seed: int
    kept_epoch: int
    validation: dict[str, float]
    epochs: list[dict] = field(default_factory=list)
    train_examples_per_s: float = 0.0
    train_examples: int = 0  # examples trained on (task.max_train_examples: the subsample)
    test: dict[str, float] | None = None
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)  # split -> the kept epoch's
    state: dict[str, torch.Tensor] | None = None  # the kept weights (CPU)

    def summary(self) -> dict:
        row = {
            "seed": self.seed,
            "kept_epoch": self.kept_epoch,
            "validation": self.validation,
            "train_examples": self.train_examples,
            "train_examples_per_s": round(self.train_examples_per_s, 1),
            "epochs": self.epochs,
        }
        if self.test is not None:
            row["test"] = self.test
        return row


class FineTuner:
    """One seed of one task: build, train `trainer.epochs` epochs with a validation score after each, keep one."""

    def __init__(self, config: FinetuneConfig, data: TaskData, accelerator: Accelerator, seed: int, folder: Path):
        self.config, self.data, self.accelerator, self.seed = config, data, accelerator, seed
        trainer = config.trainer
        if trainer.batch_size % accelerator.num_processes:
            raise ValueError(
                f"trainer.batch_size={trainer.batch_size} is not a multiple of the "
                f"{accelerator.num_processes} processes"
            )
        set_seed(seed)  # the head's initial weights, then the order of the examples and dropout
        model = build_task_model(
            data.kind.model_class,
            folder,
            data.tokenizer,
            data.label_names,
            config.classifier_dropout,
            config.attn_implementation,
            pretrained=config.model_init == "pretrained",
        )
        self.lr = config.optim.lr_for(model.config.hidden_size)
        groups = layerwise_parameter_groups(
            model, self.lr, config.optim.layerwise_lr_decay, config.optim.weight_decay, model.config.num_hidden_layers
        )
        optimizer = build_optimizer(model, config.optim, self.lr, groups)
        collate = data.kind.collate(token_id(data.tokenizer, "[PAD]"))
        subsample_seed = seed if config.task.subsample_seed is None else config.task.subsample_seed
        self.train_features = data.train_subsample(config.task.max_train_examples, subsample_seed)
        train = torch.utils.data.DataLoader(
            TaskDataset(self.train_features),
            batch_size=trainer.batch_size // accelerator.num_processes,
            shuffle=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )
        evaluation = {
            split: torch.utils.data.DataLoader(
                TaskDataset(data.features[split], by_length=True),
                batch_size=trainer.eval_batch_size,
                collate_fn=collate,
            )
            for split in data.features
            if split != "train"
        }
        self.model, self.optimizer, self.train_loader = accelerator.prepare(model, optimizer, train)
        self.eval_loaders = {split: accelerator.prepare(loader) for split, loader in evaluation.items()}
        self.steps = len(self.train_loader) * trainer.epochs  # the prepared loader: batches per process
        self.warmup = round(config.optim.warmup_share * self.steps)
        # on the bare optimizer, stepped once per optimizer step (accelerate's wrapper would step it per process)
        self.scheduler = build_scheduler(optimizer, self.warmup, self.steps)

    @property
    def task_model(self) -> TaskModel:
        return self.accelerator.unwrap_model(self.model)

    def run(self, tracker: Tracker) -> SeedResult:
        config, accelerator = self.config, self.accelerator
        main_metric = config.task.metrics[0]
        result, kept_score, examples_per_s, epochs = None, None, [], []
        for epoch in range(1, config.trainer.epochs + 1):
            train_loss, rate = self._train_epoch(epoch)
            examples_per_s.append(rate)
            predictions = self.predict("validation")
            scores = self.data.score("validation", predictions)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_examples_per_s": rate,
                **{f"validation/{k}": v for k, v in scores.items()},
            }
            tracker.log(epoch * len(self.train_loader), row)
            accelerator.print(
                f"seed {self.seed} epoch {epoch}: train loss {train_loss:.4f}, "
                + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                + f" ({rate:.0f} examples/s)"
            )
            if config.trainer.keep == "last" or kept_score is None or scores[main_metric] > kept_score:
                kept_score = scores[main_metric]
                state = {k: v.detach().to("cpu", copy=True) for k, v in self.task_model.state_dict().items()}
                result = SeedResult(self.seed, epoch, scores, predictions={"validation": predictions}, state=state)
            epochs.append(row)
        assert result is not None and result.state is not None, "trainer.epochs >= 1"
        result.epochs, result.train_examples_per_s = epochs, statistics.mean(examples_per_s)
        result.train_examples = len(self.train_features)
        if "test" in self.eval_loaders:
            self.task_model.load_state_dict(result.state)
            result.predictions["test"] = self.predict("test")
            if self.data.labelled("test"):
                result.test = self.data.score("test", result.predictions["test"])
        return result

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """(mean training loss, examples/s over all processes); one host sync, at the end."""
        accelerator, model = self.accelerator, self.model
        model.train()
        loss_sum = torch.zeros((), device=accelerator.device)
        examples = 0
        start = time.perf_counter()
        for batch in self.train_loader:
            with accelerator.autocast():
                logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            loss = self.task_model.loss(logits, batch)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), self.config.optim.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            examples += len(batch["input_ids"])
        mean_loss = accelerator.reduce(loss_sum, "mean").item() / len(self.train_loader)
        elapsed = time.perf_counter() - start
        if not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"seed {self.seed} epoch {epoch}: the training loss is not finite (try a lower "
                "optim.lr, or trainer.mixed_precision=bf16 instead of fp16)"
            )
        return mean_loss, examples * accelerator.num_processes / elapsed

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


def run_finetuning(config: FinetuneConfig, config_yaml: str) -> dict:
    """Every seed, then results.json, predictions/ and model/ in output_dir; returns the results."""
    accelerator = Accelerator(mixed_precision=config.trainer.mixed_precision)
    if accelerator.device.type == "cpu" and config.trainer.mixed_precision == "fp16":
        raise ValueError("trainer.mixed_precision=fp16 needs a GPU; on CPU use bf16 or no")
    out = Path(config.output_dir)
    lock = RunLock(out) if accelerator.is_main_process else None
    try:
        assert config.model_path, "FinetuneConfig checks it"
        folder = model_folder(config.model_path)
        tokenizer = load_tokenizer(config.tokenizer_path or folder)
        with accelerator.main_process_first():  # datasets' cache is written once
            data = prepare_task_data(config.task, tokenizer)
        accelerator.print(data.summary(folder, config))
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(config_yaml)
        results = []
        for seed in config.run_seeds():
            tuner = FineTuner(config, data, accelerator, seed, folder)
            if seed == config.run_seeds()[0]:
                accelerator.print(
                    f"optimizer: lr {tuner.lr:g} (layer-wise decay {config.optim.layerwise_lr_decay:g})"
                    f", {tuner.steps} steps ({len(tuner.train_loader)} per epoch), warmup "
                    f"{tuner.warmup}"
                )
            tracker = Tracker(
                config.logging,
                out / f"seed_{seed}",
                {**yaml_mapping(config_yaml), "seed": seed},
                enabled=accelerator.is_main_process,
            )
            try:
                result = tuner.run(tracker)
            finally:
                tracker.finish()
            if accelerator.is_main_process:
                write_predictions(out / f"seed_{seed}" / "predictions", result, data)
            results.append(result)
            kept = max(results, key=lambda r: r.validation[config.task.metrics[0]])
            for r in results:  # only the kept seed's weights stay in memory
                if r is not kept:
                    r.state = None
            accelerator.free_memory()  # the accelerator lets go of this seed's model, optimizer and loaders
        summary = summarise(config, results, kept)
        if accelerator.is_main_process:
            finish_outputs(out, config, summary, kept, data, tokenizer, folder)
        accelerator.print(
            f"validation ({len(results)} seed(s), median): "
            + ", ".join(f"{k} {v:.4f}" for k, v in summary["validation"].items())
            + f" -> {out / RESULTS_FILE}"
        )
        return summary
    finally:
        if lock is not None:
            lock.release()
        accelerator.end_training()


def summarise(config: FinetuneConfig, results: list[SeedResult], kept: SeedResult) -> dict:
    metrics = list(results[0].validation)
    summary = {
        "task": config.task.name,
        "kind": config.task.kind,
        "model_path": config.model_path,
        "model_init": config.model_init,
        "seeds": [r.seed for r in results],
        "metric": config.task.metrics[0],
        "validation": {m: statistics.median(r.validation[m] for r in results) for m in metrics},
        "validation_mean": {m: statistics.mean(r.validation[m] for r in results) for m in metrics},
        "kept_seed": kept.seed,
        "per_seed": [r.summary() for r in results],
    }
    tests = [r.test for r in results if r.test is not None]
    if len(tests) == len(results):
        summary["test"] = {m: statistics.median(test[m] for test in tests) for m in metrics}
    return summary


def write_predictions(folder: Path, result: SeedResult, data: TaskData) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, predictions in result.predictions.items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in data.prediction_rows(split, predictions):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def finish_outputs(
    out: Path, config: FinetuneConfig, summary: dict, kept: SeedResult, data: TaskData, tokenizer, folder: Path
) -> None:
    shutil.rmtree(out / "predictions", ignore_errors=True)
    shutil.copytree(out / f"seed_{kept.seed}" / "predictions", out / "predictions")
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
        assert kept.state is not None, "the kept seed keeps its weights"
        model.load_state_dict(kept.state)
        shutil.rmtree(out / "model", ignore_errors=True)
        model.save_pretrained(out / "model")
        save_tokenizer(tokenizer, out / "model", model_max_length=config.task.max_length)
        (out / "model" / "README.md").write_text(fine_tuned_model_card(model, summary, kept))
        summary["model"] = str(out / "model")
    (out / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")


def fine_tuned_model_card(model: TaskModel, summary: dict, kept: SeedResult) -> str:
    scores = ", ".join(f"{k} {v:.4f}" for k, v in kept.validation.items())
    medians = ", ".join(f"{k} {v:.4f}" for k, v in summary["validation"].items())
    return "\n".join(
        [
            f"# ELECTRA fine-tuned: {summary['task']} ({model.architecture})",
            "",
            f"Fine-tuned with electra-pretrain from `{summary['model_path']}` ({summary['model_init']} weights).",
            "",
            f"- labels: {model.labels if model.labels else 'regression (one output)'}",
            f"- this model: seed {kept.seed}, epoch {kept.kept_epoch}; validation {scores}",
            f"- seeds {summary['seeds']}, validation median: {medians}",
            f"- command: `{' '.join(['python', *sys.argv])}`",
            "",
            "```python",
            f"from transformers import {model.architecture}, ElectraTokenizerFast",
            f'model = {model.architecture}.from_pretrained("PATH")',
            'tokenizer = ElectraTokenizerFast.from_pretrained("PATH")',
            "```",
            "",
        ]
    )
