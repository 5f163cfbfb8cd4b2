"""`electra-pretrain bench finetune`: our fine-tuning loop against a transformers-built one, same data and recipe.

The peer is the loop a transformers user writes: `ElectraForSequenceClassification.from_pretrained` on the same
discriminator folder, torch's AdamW (weight decay 0.01 off LayerNorm and biases, eps 1e-6), transformers'
`get_linear_schedule_with_warmup` (10%), gradient clipping at 1.0, the best epoch's validation accuracy kept. Both
see the same encoded examples in the same batches (one DataLoader construction, seeded alike); ours runs with
layer-wise decay off, so only the implementations differ. Throughput is training examples per second (evaluation
excluded), the mean over epochs; accuracy the mean over seeds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from electra_pretrain.finetune.batches import TaskDataset
from electra_pretrain.finetune.data import TaskData, prepare_task_data
from electra_pretrain.tokenizer import token_id


def _overrides(
    folder: Path, train: str, validation: str, epochs: int, lr: float, batch_size: int, max_length: int
) -> list[str]:
    return [
        f"model_path={folder}",
        "task=classification",
        f"task.train_files=[{train}]",
        f"task.validation_files=[{validation}]",
        f"trainer.epochs={epochs}",
        f"trainer.batch_size={batch_size}",
        f"optim.lr={lr}",
        "optim.layerwise_lr_decay=1.0",
        f"task.max_length={max_length}",
        "trainer.save_model=false",
        "logging=none",
    ]


def ours(overrides: list[str], seed: int, out: Path) -> dict:
    from electra_pretrain.finetune.app import finetune_from_overrides

    result = finetune_from_overrides([*overrides, f"seed={seed}", f"output_dir={out}"])["per_seed"][0]
    return {"accuracy": result["validation"]["accuracy"], "examples_per_s": result["train_examples_per_s"]}


def transformers_loop(folder: Path, data: TaskData, seed: int, epochs: int, lr: float, batch_size: int) -> dict:
    from transformers import ElectraForSequenceClassification, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights were newly initialised": the head, as expected
    torch.manual_seed(seed)
    names = data.label_names
    assert names is not None, "a classification task"
    model = ElectraForSequenceClassification.from_pretrained(
        folder, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, eps=1e-6
    )
    collate = data.kind.collate(token_id(data.tokenizer, "[PAD]"))
    train = torch.utils.data.DataLoader(
        TaskDataset(data.features["train"]),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    valid = torch.utils.data.DataLoader(
        TaskDataset(data.features["validation"], by_length=True), batch_size=128, collate_fn=collate
    )
    steps = len(train) * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(0.1 * steps), steps)
    best, rates = 0.0, []
    for _ in range(epochs):
        model.train()
        start, examples = time.perf_counter(), 0
        for batch in train:
            loss = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                labels=batch["labels"],
            ).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            examples += len(batch["input_ids"])
        rates.append(examples / (time.perf_counter() - start))
        model.eval()
        correct = 0
        with torch.no_grad():
            for batch in valid:
                logits = model(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"],
                ).logits
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
        best = max(best, correct / len(data.features["validation"]))
    return {"accuracy": best, "examples_per_s": statistics.mean(rates)}


def bench_finetune(
    folder: str,
    train: str,
    validation: str,
    seeds: list[int],
    epochs: int = 3,
    lr: float = 3e-4,
    batch_size: int = 32,
    max_length: int = 128,
) -> dict:
    """Per seed, ours then the transformers loop; returns both per seed and the means."""
    from electra_pretrain.finetune.config import TaskConfig
    from electra_pretrain.finetune.models import model_folder
    from electra_pretrain.tokenizer import load_tokenizer

    model_dir = model_folder(folder)
    task = TaskConfig(train_files=[train], validation_files=[validation], max_length=max_length)
    data = prepare_task_data(task, load_tokenizer(model_dir))
    overrides = _overrides(model_dir, train, validation, epochs, lr, batch_size, max_length)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            rows.append(
                {
                    "seed": seed,
                    "ours": ours(overrides, seed, Path(scratch) / f"seed_{seed}"),
                    "transformers": transformers_loop(model_dir, data, seed, epochs, lr, batch_size),
                }
            )
    mean = {
        side: {k: statistics.mean(r[side][k] for r in rows) for k in ("accuracy", "examples_per_s")}
        for side in ("ours", "transformers")
    }
    return {
        "model": str(model_dir),
        "train_examples": len(data.features["train"]),
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "per_seed": rows,
        "mean": mean,
        "accuracy_difference_points": 100 * (mean["ours"]["accuracy"] - mean["transformers"]["accuracy"]),
        "throughput_ratio": mean["ours"]["examples_per_s"] / mean["transformers"]["examples_per_s"],
    }
