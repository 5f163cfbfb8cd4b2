"""Held-out evaluation: the metrics google-research/electra's run_pretraining.py evaluates, and one that needs no
generator.

The held-out set is built once, from documents never trained on (`data.eval_files`, or the `data.eval_share` of
the training documents), by the same example builder with a fixed seed, in batches of `EVAL_BATCH_ROWS` rows. Each
batch is masked and sampled with a seed of its own (`EVAL_SEED` + its index), inside `torch.random.fork_rng`, so:
- the figures are comparable from step to step, from run to run and with `electra-pretrain evaluate`;
- several processes evaluate disjoint batches yet corrupt each batch exactly as one process would, and AUCs are
  computed over every process's tokens (gathered), never as a mean of per-process AUCs;
- training's own random state is untouched, so evaluating never changes what is trained.

Metrics (all over the whole held-out set, sums before ratios):
  mlm_loss, mlm_accuracy, sampled_accuracy   at the masked positions (sampled: the generator's sample is the original)
  rtd_loss, disc_auc, disc_accuracy, disc_precision, disc_recall   over every non-pad token, on the generator's
                                             corruption (threshold 0.5 for accuracy, precision and recall)
  random_replacement_auc                     the discriminator's ROC-AUC on the held-out text with
                                             `RANDOM_REPLACEMENT_SHARE` of its (non-special) tokens replaced by
                                             uniformly random vocabulary tokens: the same scale for any generator
  effective_rank, mean_cosine                of the encoder's last-layer states of the ordinary tokens in the first
                                             `REPRESENTATION_BATCHES` held-out batches (representations.py): a
                                             collapsing representation shows here
A masked-LM baseline (model.objective=mlm) reports mlm_loss, mlm_accuracy and the two representation figures.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tokenizers import Tokenizer

from electra_pretrain.jobs import yaml_mapping
from electra_pretrain.model_config import ElectraConfig
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.build import build_model, joint_module, masked_lm_module
from electra_pretrain.pretrain.checkpoint import complete_checkpoints, verify_checkpoint
from electra_pretrain.pretrain.config import ModelConfig, SourceSpec
from electra_pretrain.pretrain.export import TRAIN_CONFIG, checkpoint_model_config
from electra_pretrain.pretrain.objective import Electra, MaskedLM, Objective
from electra_pretrain.pretrain.packing import ExampleBuilder
from electra_pretrain.pretrain.representations import effective_rank, mean_cosine
from electra_pretrain.pretrain.sources import documents
from electra_pretrain.pretrain.stream import Collator
from electra_pretrain.tokenizer import load_tokenizer, special_token_ids, token_id
from electra_pretrain.weights import MASKED_LM_FOLDER, load_module_weights

EVAL_SEED = 0
EVAL_BATCH_ROWS = 32
RANDOM_REPLACEMENT_SHARE = 0.15
REPRESENTATION_BATCHES = 2  # up to 64 rows: some 8k token states, whatever the process count
GENERATOR_METRICS = (
    "mlm_loss",
    "mlm_accuracy",
    "sampled_accuracy",
    "rtd_loss",
    "disc_auc",
    "disc_accuracy",
    "disc_precision",
    "disc_recall",
)
REPRESENTATION_METRICS = ("effective_rank", "mean_cosine")
HELD_OUT_METRICS = (*GENERATOR_METRICS, "random_replacement_auc", *REPRESENTATION_METRICS)
# The sums `_generator_sums` returns, in order; every ratio is taken over the whole set, after the sums.
SUMS = (
    "mlm_loss",
    "predictions",
    "mlm_correct",
    "sampled_correct",
    "rtd_loss",
    "tokens",
    "disc_correct",
    "true_positives",
    "predicted",
    "replaced",
)


def held_out_batches(
    texts: Iterable[str], tokenizer: Tokenizer, max_seq_length: int, max_tokens: int
) -> list[dict[str, torch.Tensor]]:
    """The first `max_tokens` non-pad tokens of examples built from `texts`, as padded batches (CPU)."""
    builder = ExampleBuilder(tokenizer, max_seq_length, random.Random(EVAL_SEED))
    examples, tokens = [], 0
    for text in texts:
        for example in builder.document_examples(text):
            examples.append(example)
            tokens += len(example.input_ids)
            if tokens >= max_tokens:
                break
        if tokens >= max_tokens:
            break
    if not examples:
        raise ValueError(
            "evaluation: the held-out data yielded no examples (empty, or no document held out: "
            "raise data.eval_share or set data.eval_files)"
        )
    collate = Collator(max_seq_length, token_id(tokenizer, "[PAD]"))
    return [collate(examples[i : i + EVAL_BATCH_ROWS]) for i in range(0, len(examples), EVAL_BATCH_ROWS)]


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve, exactly (Mann-Whitney U with average ranks for ties); NaN without both classes."""
    scores, labels = scores.double().flatten(), labels.bool().flatten()
    positives = int(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each distinct score
    rank_sum = average_rank[inverse][labels].sum().item()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


class Evaluator:
    """Evaluates a joint module (every metric), a masked-LM baseline (MLM and representation figures) or a
    discriminator alone (random_replacement_auc and representation figures) on this process's share of the held-out
    batches."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], tokenizer: Tokenizer, accelerator: Accelerator):
        self.accelerator = accelerator
        rank, world = accelerator.process_index, accelerator.num_processes
        self.batches = [(index, batch) for index, batch in enumerate(batches) if index % world == rank]
        self.held_out_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        specials = special_token_ids(tokenizer)
        self.special_ids = torch.tensor(sorted(set(specials.values())))
        ordinary = sorted(set(range(tokenizer.get_vocab_size())) - set(specials.values()))
        self.ordinary_ids = torch.tensor(ordinary)

    @torch.no_grad()
    def __call__(
        self, model: Objective | None = None, discriminator: ElectraDiscriminator | None = None
    ) -> dict[str, float]:
        """`model`: the joint module or the masked-LM baseline; `discriminator`: a discriminator alone (or the
        joint module's own, the default)."""
        electra = model if isinstance(model, Electra) else None
        if discriminator is None and electra is not None:
            discriminator = electra.discriminator
        encoder = discriminator if discriminator is not None else model.encoder_model if model is not None else None
        assert encoder is not None, "a model or a discriminator"
        modules = [m for m in (model, discriminator) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        device = self.accelerator.device
        sums = torch.zeros(len(SUMS), dtype=torch.float64, device=device)
        scores: dict[str, list[torch.Tensor]] = {
            "disc": [],
            "disc_labels": [],
            "random": [],
            "random_labels": [],
            "states": [],
        }
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), self.accelerator.autocast():
                for index, cpu_batch in self.batches:
                    batch = {k: v.to(device) for k, v in cpu_batch.items()}
                    torch.manual_seed(EVAL_SEED + index)
                    if electra is not None:
                        sums += self._generator_sums(electra(**batch), batch, scores)
                    elif isinstance(model, MaskedLM):
                        sums += self._masked_lm_sums(model(**batch))
                    if discriminator is not None:
                        self._random_replacement(discriminator, batch, index, scores)
                    if index < REPRESENTATION_BATCHES:
                        self._token_states(encoder, batch, scores)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        return self._reduce(sums, scores, electra is not None, isinstance(model, MaskedLM), discriminator is not None)

    def _generator_sums(self, out, batch: dict[str, torch.Tensor], scores: dict) -> torch.Tensor:
        weights = out.masked.weights  # (B, P)
        labels = out.masked.labels
        token_ce = F.cross_entropy(out.gen_logits.float().flatten(0, 1), labels.flatten(), reduction="none")
        tokens = batch["attention_mask"].bool()  # (B, L)
        logits = out.disc_logits.float()
        replaced = out.is_replaced & tokens
        predicted = (logits > 0) & tokens
        token_bce = F.binary_cross_entropy_with_logits(logits, out.is_replaced.float(), reduction="none")
        scores["disc"].append(logits[tokens])
        scores["disc_labels"].append(out.is_replaced[tokens])
        return torch.stack(
            [
                (token_ce * weights.flatten()).sum(),
                weights.sum(),
                ((out.gen_logits.argmax(-1) == labels) & weights).sum(),
                ((out.sampled == labels) & weights).sum(),
                (token_bce * tokens).sum(),
                tokens.sum(),
                ((predicted == replaced) & tokens).sum(),
                (predicted & replaced).sum(),
                predicted.sum(),
                replaced.sum(),
            ]
        ).double()

    def _masked_lm_sums(self, out) -> torch.Tensor:
        weights, labels = out.masked.weights, out.masked.labels
        token_ce = F.cross_entropy(out.gen_logits.float().flatten(0, 1), labels.flatten(), reduction="none")
        sums = torch.zeros(len(SUMS), dtype=torch.float64, device=weights.device)
        sums[0] = (token_ce * weights.flatten()).sum()
        sums[1] = weights.sum()
        sums[2] = ((out.gen_logits.argmax(-1) == labels) & weights).sum()
        return sums

    def _token_states(self, encoder, batch: dict[str, torch.Tensor], scores: dict) -> None:
        """The encoder's last-layer states of the ordinary (non-special, non-pad) tokens, flattened."""
        ids = batch["input_ids"]
        states = encoder.electra(ids, batch["attention_mask"], batch["token_type_ids"]).float()  # (B, L, H)
        ordinary = batch["attention_mask"].bool() & ~torch.isin(ids, self.special_ids.to(ids.device))
        scores["width"] = states.shape[-1]
        scores["states"].append(states[ordinary].flatten())

    def _random_replacement(
        self, discriminator: ElectraDiscriminator, batch: dict[str, torch.Tensor], index: int, scores: dict
    ) -> None:
        ids = batch["input_ids"]
        # A generator of its own: the same replacements whether or not the joint module ran before on this batch.
        rng = torch.Generator(ids.device).manual_seed(EVAL_SEED + 1_000_003 * (index + 1))
        ordinary = batch["attention_mask"].bool() & ~torch.isin(ids, self.special_ids.to(ids.device))
        chosen = (torch.rand(ids.shape, device=ids.device, generator=rng) < RANDOM_REPLACEMENT_SHARE) & ordinary
        pool = self.ordinary_ids.to(ids.device)
        random_ids = pool[torch.randint(len(pool), ids.shape, device=ids.device, generator=rng)]
        corrupted = torch.where(chosen, random_ids, ids)
        logits = discriminator(corrupted, batch["attention_mask"], batch["token_type_ids"]).float()
        scores["random"].append(logits[ordinary])
        scores["random_labels"].append((corrupted != ids)[ordinary])

    def _gather(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Every process's values, concatenated in rank order (float32; gloo gathers no bool tensors)."""
        device = self.accelerator.device
        local = torch.cat(parts).float() if parts else torch.zeros(0, device=device)
        if self.accelerator.num_processes == 1:
            return local.cpu()
        # Processes hold different numbers of tokens: pad to the longest, gather, then drop the padding.
        sizes = self.accelerator.gather(torch.tensor([local.numel()], device=device)).tolist()
        padded = self.accelerator.pad_across_processes(local)
        gathered = self.accelerator.gather(padded).cpu()
        width = max(sizes)
        return torch.cat([gathered[i * width : i * width + n] for i, n in enumerate(sizes)])

    def _reduce(
        self, sums: torch.Tensor, scores: dict, with_generator: bool, masked_lm: bool, with_discriminator: bool
    ) -> dict[str, float]:
        result: dict[str, float] = {}
        if with_discriminator:
            random_labels = self._gather(scores["random_labels"]) > 0
            result["random_replacement_auc"] = roc_auc(self._gather(scores["random"]), random_labels)
        states = self._gather(scores["states"])
        width = int(
            self.accelerator.reduce(torch.tensor(scores.get("width", 0), device=self.accelerator.device), "max")
        )
        states = states.view(-1, width) if width else states.view(0, 1)
        result["effective_rank"] = effective_rank(states) if len(states) else float("nan")
        result["mean_cosine"] = mean_cosine(states)
        if masked_lm:
            total = dict(zip(SUMS, self.accelerator.reduce(sums, "sum").tolist()))
            predictions = max(total["predictions"], 1)
            result.update(mlm_loss=total["mlm_loss"] / predictions, mlm_accuracy=total["mlm_correct"] / predictions)
        if not with_generator:
            return result
        total = dict(zip(SUMS, self.accelerator.reduce(sums, "sum").tolist()))
        predictions, tokens = max(total["predictions"], 1), max(total["tokens"], 1)
        result.update(
            mlm_loss=total["mlm_loss"] / predictions,
            mlm_accuracy=total["mlm_correct"] / predictions,
            sampled_accuracy=total["sampled_correct"] / predictions,
            rtd_loss=total["rtd_loss"] / tokens,
            disc_auc=roc_auc(self._gather(scores["disc"]), self._gather(scores["disc_labels"]) > 0),
            disc_accuracy=total["disc_correct"] / tokens,
            disc_precision=total["true_positives"] / max(total["predicted"], 1),
            disc_recall=total["true_positives"] / max(total["replaced"], 1),
        )
        return result


@dataclass
class EvaluationTarget:
    """What `electra-pretrain evaluate PATH` found at PATH, and the data settings it was trained with."""

    model: Objective | None  # the joint module or the masked-LM baseline; None for a discriminator folder alone
    discriminator: ElectraDiscriminator | None  # None for the masked-LM baseline
    tokenizer: Tokenizer
    train_config: dict  # the resolved training config when PATH carries one, else {}


def load_target(path: str | Path, verify: bool = True) -> EvaluationTarget:
    """A run folder (its newest complete checkpoint, else its export), a checkpoint folder (config.yaml,
    model.safetensors, tokenizer/), an export root (discriminator/ and generator/, or mlm/), or one model folder (a
    discriminator, or a masked LM). With `verify`, files are checked against the checksums they carry."""
    path = Path(path)
    if (path / "checkpoints").is_dir() or (path / "export").is_dir():  # a run folder
        newest = complete_checkpoints(path / "checkpoints")
        chosen = newest[0] if newest else path / "export"
        print(f"{path} is a run folder: evaluating {chosen}")
        path = chosen
    if (path / "model.safetensors").is_file() and (path / "config.yaml").is_file():
        config_yaml, model_config = checkpoint_model_config(path)
        if verify:
            verify_checkpoint(path)
        tokenizer = load_tokenizer(path / "tokenizer")
        model = build_model(model_config, tokenizer, load_pretrained=False)  # the checkpoint holds the weights
        load_module_weights(model, path / "model.safetensors")
        discriminator = model.discriminator if isinstance(model, Electra) else None
        return EvaluationTarget(model, discriminator, tokenizer, yaml_mapping(config_yaml))
    train_config: dict = {}
    model_config = ModelConfig()
    if (path / TRAIN_CONFIG).is_file():
        config_yaml, model_config = checkpoint_model_config(path, TRAIN_CONFIG)
        train_config = yaml_mapping(config_yaml)
    if (path / "discriminator").is_dir() and (path / "generator").is_dir():
        tokenizer = load_tokenizer(path / "discriminator")
        discriminator = ElectraDiscriminator.from_pretrained(path / "discriminator", verify=verify)
        generator = ElectraGenerator.from_pretrained(path / "generator", verify=verify)
        # Each folder holds its own copy of the shared tables, so the two stay separate here ("none").
        electra = joint_module(generator, discriminator, model_config, tokenizer, embedding_sharing="none")
        return EvaluationTarget(electra, discriminator, tokenizer, train_config)
    if (path / MASKED_LM_FOLDER / "config.json").is_file():
        path = path / MASKED_LM_FOLDER
    if (path / "config.json").is_file():
        architectures = ElectraConfig.architectures(path)
        tokenizer = load_tokenizer(path)
        if ElectraGenerator.architecture in architectures:
            model = ElectraGenerator.from_pretrained(path, verify=verify)
            return EvaluationTarget(masked_lm_module(model, model_config, tokenizer), None, tokenizer, train_config)
        discriminator = ElectraDiscriminator.from_pretrained(path, verify=verify)
        return EvaluationTarget(None, discriminator, tokenizer, train_config)
    raise FileNotFoundError(
        f"{path}: not a run folder, a checkpoint folder (config.yaml + model.safetensors), an export folder "
        "(discriminator/ + generator/, or mlm/) or a model folder (config.json)"
    )


def evaluate_path(
    path: str | Path,
    files: list[str],
    *,
    data_format: str | None = None,
    text_field: str | None = None,
    document_boundary: str | None = None,
    seq_len: int | None = None,
    max_tokens: int | None = None,
    held_out_share: float = 0.0,
    device: str = "cpu",
    verify: bool = True,
) -> tuple[dict, int]:
    """`electra-pretrain evaluate`: the held-out metrics of what `path` holds on `files`, read with the data settings
    the run was trained with unless given; returns (metrics with "tokens", the sequence length used)."""
    target = load_target(path, verify)
    trained = target.train_config.get("data", {})
    spec = SourceSpec(
        files=files,
        format=data_format or trained.get("format", "auto"),
        text_field=text_field or trained.get("text_field", "text"),
        document_boundary=document_boundary or trained.get("document_boundary", "blank_line"),
    )
    max_seq_length = seq_len or trained.get("max_seq_length", 128)
    max_tokens = max_tokens or target.train_config.get("trainer", {}).get("eval_tokens", 65_536)
    rows = documents([spec], seed=EVAL_SEED, shuffle_files=False, held_out_share=held_out_share, held_out=True)
    batches = held_out_batches((row["text"] for row in rows), target.tokenizer, max_seq_length, max_tokens)
    evaluator = Evaluator(batches, target.tokenizer, Accelerator(cpu=device == "cpu"))
    model = target.model.to(evaluator.accelerator.device) if target.model is not None else None
    discriminator = target.discriminator.to(evaluator.accelerator.device) if target.discriminator else None
    return {**evaluator(model, discriminator), "tokens": evaluator.held_out_tokens}, max_seq_length
