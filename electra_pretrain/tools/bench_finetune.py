"""`electra-pretrain bench finetune`: our fine-tuning loop against a transformers-built one, same data and recipe.

The peer is the loop a transformers user writes: the kind's `ElectraFor...` class `from_pretrained` on the same
discriminator folder, torch's AdamW (weight decay 0.01 off LayerNorm and biases, eps 1e-6), transformers'
`get_linear_schedule_with_warmup` (10%), gradient clipping at 1.0. Both see the same encoded features in the same
batches (one DataLoader construction, seeded alike); ours runs with layer-wise decay off, so only the
implementations differ. Throughput is training examples (features: a question-answering window is one) per second,
evaluation excluded, the mean over epochs. The score is the task's first metric on validation, the mean over seeds:
for classification both sides' best epoch; for other kinds ours only (the peer would need the kind's
post-processing, e.g. SQuAD's n-best spans, which is what is being compared against).
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

# what a transformers ELECTRA model's forward takes from our batches (the rest, e.g. an example index, stays out)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")
PEER_CLASSES = {
    "classification": "ElectraForSequenceClassification",
    "question_answering": "ElectraForQuestionAnswering",
}


def _overrides(
    folder: Path,
    task: list[str],
    train: str,
    validation: str,
    epochs: int,
    lr: float,
    batch_size: int,
    max_length: int,
) -> list[str]:
    return [
        f"model_path={folder}",
        *task,
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


def ours(overrides: list[str], seed: int, out: Path, metric: str) -> dict:
    from electra_pretrain.finetune.app import finetune_from_overrides

    result = finetune_from_overrides([*overrides, f"seed={seed}", f"output_dir={out}"])["per_seed"][0]
    return {"score": result["validation"][metric], "examples_per_s": result["train_examples_per_s"]}


def transformers_loop(folder: Path, data: TaskData, seed: int, epochs: int, lr: float, batch_size: int) -> dict:
    import transformers
    from transformers import get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights were newly initialised": the head, as expected
    torch.manual_seed(seed)
    kind = data.kind.name
    model_class = getattr(transformers, PEER_CLASSES[kind])
    names = data.label_names
    labels = (
        {}
        if names is None
        else dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    )
    model = model_class.from_pretrained(folder, **labels)
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
    best, rates = None, []
    for _ in range(epochs):
        model.train()
        start, examples = time.perf_counter(), 0
        for batch in train:
            loss = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            examples += len(batch["input_ids"])
        rates.append(examples / (time.perf_counter() - start))
        if kind == "classification":
            model.eval()
            correct = 0
            with torch.no_grad():
                for batch in valid:
                    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                    correct += int((model(**inputs).logits.argmax(-1) == batch["labels"]).sum())
            best = max(best or 0.0, correct / len(data.features["validation"]))
    return {"score": best, "examples_per_s": statistics.mean(rates)}


def bench_finetune(
    folder: str,
    train: str,
    validation: str,
    seeds: list[int],
    epochs: int = 3,
    lr: float = 3e-4,
    batch_size: int = 32,
    max_length: int = 128,
    task: list[str] | None = None,
) -> dict:
    """Per seed, ours then the transformers loop; returns both per seed and the means. `task`: finetune.py
    overrides naming the task (default: task=classification, csv with text and label columns)."""
    from electra_pretrain.finetune.app import compose_config
    from electra_pretrain.finetune.models import model_folder
    from electra_pretrain.tokenizer import load_tokenizer

    model_dir = model_folder(folder)
    overrides = _overrides(
        model_dir, task or ["task=classification"], train, validation, epochs, lr, batch_size, max_length
    )
    config, _ = compose_config(overrides)
    if config.task.kind not in PEER_CLASSES:
        raise ValueError(
            f"bench finetune: task kind {config.task.kind!r} has no peer here (one of {sorted(PEER_CLASSES)})"
        )
    data = prepare_task_data(config.task, load_tokenizer(model_dir))
    metric = config.task.metrics[0]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            rows.append(
                {
                    "seed": seed,
                    "ours": ours(overrides, seed, Path(scratch) / f"seed_{seed}", metric),
                    "transformers": transformers_loop(model_dir, data, seed, epochs, lr, batch_size),
                }
            )

    def mean_of(side: str, key: str) -> float | None:
        values = [r[side][key] for r in rows]
        return None if None in values else statistics.mean(values)

    mean = {side: {k: mean_of(side, k) for k in ("score", "examples_per_s")} for side in ("ours", "transformers")}
    ours_score, peer_score = mean["ours"]["score"], mean["transformers"]["score"]
    ours_rate, peer_rate = mean["ours"]["examples_per_s"], mean["transformers"]["examples_per_s"]
    assert ours_rate is not None and peer_rate is not None
    return {
        "model": str(model_dir),
        "task": config.task.kind,
        "metric": metric,
        "train_examples": len(data.features["train"]),
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "per_seed": rows,
        "mean": mean,
        "score_difference": None if ours_score is None or peer_score is None else ours_score - peer_score,
        "throughput_ratio": ours_rate / peer_rate,
    }
