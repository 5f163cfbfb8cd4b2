"""The pretraining objectives: masking, sampling, the joint `Electra` module (replaced-token detection) and the
`MaskedLM` baseline.

Contract: `Electra(generator, discriminator, ...)(input_ids, attention_mask, token_type_ids)` masks the batch, runs
the generator only at masked positions, samples replacements (Gumbel-max, fp32, no gradient), runs the discriminator
on the corrupted batch and returns `ElectraOutput(loss, mlm_loss, rtd_loss, metrics)`. `MaskedLM(model, ...)` is
BERT-style masked-language modelling with one encoder of the discriminator's size and the same masking, as
google-research/electra's `electra_objective=False`; it returns `MaskedLMOutput(loss, mlm_loss, metrics)`. Every
shape is static and no value leaves the device, so a step has no host sync. Semantics follow google-research/electra
pretrain_helpers.py and run_pretraining.py (docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from electra_pretrain.modeling import ElectraDiscriminator, ElectraEmbeddings, ElectraGenerator
from electra_pretrain.pretrain.config import EMBEDDING_SHARING


def max_predictions_for(seq_len: int, mask_prob: float) -> int:
    """GR build_pretraining_dataset.py: max_predictions_per_seq = int((mask_prob + 0.005) * L)."""
    return max(1, min(seq_len, int((mask_prob + 0.005) * seq_len)))


@dataclass
class MaskedBatch:
    input_ids: torch.Tensor  # (B, L) generator input: masked tokens replaced by [MASK] (or kept / random)
    positions: torch.Tensor  # (B, P) long, indices of the prediction slots (distinct within a row)
    labels: torch.Tensor  # (B, P) long, original token ids at `positions`
    weights: torch.Tensor  # (B, P) bool, True for real predictions, False for padding slots


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_token_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    mask_prob: float,
    max_predictions: int,
    mask_token_share: float = 0.85,
    random_token_share: float = 0.0,
    masked_count: str = "distinct",
) -> MaskedBatch:
    """Choose round(mask_prob x maskable) positions per row (at least 1, at most max_predictions); with
    `masked_count="original"`, the original's expected number of distinct positions (config.MASKED_COUNTS).

    Maskable = non-padding and not a special token ([CLS], [SEP], [MASK], [PAD]). Of the chosen positions,
    `mask_token_share` become [MASK], `random_token_share` a uniformly random token, the rest keep their token.
    Positions come from a top-k over random scores, so the output has a fixed width P and needs no host sync.
    """
    if not 0.0 <= mask_token_share + random_token_share <= 1.0:
        raise ValueError(
            f"mask_token_share + random_token_share must be in [0, 1], got {mask_token_share} + {random_token_share}"
        )
    batch, seq_len = input_ids.shape
    num_slots = min(max_predictions, seq_len)
    maskable = attention_mask.bool() & ~torch.isin(input_ids, special_token_ids)  # (B, L)
    num_maskable = maskable.sum(1)  # (B,)
    if masked_count == "original":
        draws = (attention_mask.sum(1) * mask_prob).round().clamp(min=1, max=num_slots)  # (B,) with replacement
        m = num_maskable.clamp(min=1).double()
        expected = m * (1 - (1 - 1 / m) ** draws.double())
        # Rounded up with probability equal to the fraction, so the mean count is the original's exactly.
        rounded = expected.floor() + (
            torch.rand(batch, device=input_ids.device, dtype=torch.float64) < expected - expected.floor()
        )
        num_to_mask = rounded.long().clamp(min=1, max=num_slots).minimum(num_maskable)
    else:
        num_to_mask = (num_maskable * mask_prob).round().long().clamp(min=1, max=num_slots).minimum(num_maskable)
    scores = torch.rand(batch, seq_len, device=input_ids.device).masked_fill(~maskable, -1.0)
    positions = scores.topk(num_slots, dim=1, sorted=True).indices  # (B, P), maskable ones first
    weights = torch.arange(num_slots, device=input_ids.device)[None, :] < num_to_mask[:, None]  # (B, P)
    labels = input_ids.gather(1, positions)

    action = torch.rand(batch, num_slots, device=input_ids.device)
    random_tokens = torch.randint_like(labels, vocab_size)
    replacement = torch.where(
        action < mask_token_share,
        torch.full_like(labels, mask_token_id),
        torch.where(action < mask_token_share + random_token_share, random_tokens, labels),
    )
    masked_ids = input_ids.scatter(1, positions, torch.where(weights, replacement, labels))
    return MaskedBatch(masked_ids, positions, labels, weights)


@torch.no_grad()
def gumbel_sample(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """argmax(logits / T + Gumbel noise) in fp32 (fp16 Gumbel noise overflows to NaN); returns ids (..., )."""
    logits = logits.float()
    # In place: at the slots this is a (B, P, V) tensor, the largest of a step, so every temporary costs.
    noise = torch.rand_like(logits).clamp_(min=torch.finfo(torch.float32).tiny)
    gumbel = noise.log_().neg_().log_().neg_()  # -log(-log(u))
    return gumbel.add_(logits, alpha=1.0 / temperature).argmax(-1)


class DisentangledEmbeddings(ElectraEmbeddings):
    """DeBERTa-v3 GDES: tables = stop_grad(generator's tables) + zero-initialised deltas.

    Only the generator's MLM loss updates the shared tables; the discriminator learns its deltas. The embedding
    LayerNorm stays the discriminator's own. Exports materialise shared + delta.
    """

    shared: ElectraEmbeddings

    def __init__(self, own: ElectraEmbeddings, shared: ElectraEmbeddings):
        nn.Module.__init__(self)
        self.LayerNorm = own.LayerNorm
        self.dropout = own.dropout
        # A plain attribute, not a submodule: the generator owns (and checkpoints) these parameters.
        self.__dict__["shared"] = shared
        self.word_delta = nn.Parameter(torch.zeros_like(shared.word_embeddings.weight))
        self.position_delta = nn.Parameter(torch.zeros_like(shared.position_embeddings.weight))
        self.token_type_delta = nn.Parameter(torch.zeros_like(shared.token_type_embeddings.weight))

    def tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        word, position, token_type = self.shared.tables()
        return (
            word.detach() + self.word_delta,
            position.detach() + self.position_delta,
            token_type.detach() + self.token_type_delta,
        )


def share_embeddings(generator: ElectraGenerator, discriminator: ElectraDiscriminator, sharing: str) -> None:
    """Share the embedding tables and their LayerNorm; each model keeps its own `embeddings_project`."""
    if sharing == "none":
        return
    gen, disc = generator.config, discriminator.config
    for name in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size"):
        if getattr(gen, name) != getattr(disc, name):
            raise ValueError(
                f"embedding sharing {sharing!r} needs equal {name}: generator {getattr(gen, name)} "
                f"vs discriminator {getattr(disc, name)}"
            )
    if sharing == "tied":
        # One module, so one set of Parameters; the generator's output layer reads the table at call time.
        discriminator.electra.embeddings = generator.electra.embeddings
    elif sharing == "gdes":
        discriminator.electra.embeddings = DisentangledEmbeddings(
            discriminator.electra.embeddings, generator.electra.embeddings
        )
    else:
        raise ValueError(f"embedding sharing={sharing!r}; choose one of {EMBEDDING_SHARING}")


@dataclass
class ElectraOutput:
    loss: torch.Tensor  # () gen_weight * mlm_loss + disc_weight * rtd_loss
    mlm_loss: torch.Tensor  # () mean cross-entropy over masked positions
    rtd_loss: torch.Tensor  # () mean binary cross-entropy over all non-pad tokens
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # () tensors, detached, still on device
    # What the losses were computed from, for held-out evaluation (references, no extra work):
    masked: MaskedBatch | None = None
    gen_logits: torch.Tensor | None = None  # (B, P, V) at the prediction slots
    sampled: torch.Tensor | None = None  # (B, P) the generator's samples
    disc_logits: torch.Tensor | None = None  # (B, L)
    is_replaced: torch.Tensor | None = None  # (B, L) bool: the discriminator's targets

    def scalars(self) -> dict[str, torch.Tensor]:
        """Every () value a step logs, by name (Electra.logged names the ones a step sums)."""
        return {"loss": self.loss, "mlm_loss": self.mlm_loss, "rtd_loss": self.rtd_loss, **self.metrics}


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor  # () = mlm_loss
    mlm_loss: torch.Tensor  # () mean cross-entropy over masked positions
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # () tensors, detached, still on device
    masked: MaskedBatch | None = None
    gen_logits: torch.Tensor | None = None  # (B, P, V) at the prediction slots

    def scalars(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss, "mlm_loss": self.mlm_loss, **self.metrics}


class Electra(nn.Module):
    """Generator + discriminator trained jointly on MLM + weighted replaced-token detection."""

    special_token_ids: torch.Tensor  # a buffer: the ids never masked
    # The () values a training step sums and logs (ElectraOutput.scalars), in this order.
    logged = (
        "loss",
        "mlm_loss",
        "rtd_loss",
        "gen_accuracy",
        "disc_accuracy",
        "replaced_fraction",
        "disc_precision",
        "disc_recall",
    )

    def __init__(
        self,
        generator: ElectraGenerator,
        discriminator: ElectraDiscriminator,
        *,
        mask_token_id: int,
        special_token_ids: list[int],
        embedding_sharing: str = "tied",
        mask_prob: float = 0.15,
        max_predictions: int | None = None,
        mask_token_share: float = 0.85,
        random_token_share: float = 0.0,
        temperature: float = 1.0,
        gen_weight: float = 1.0,
        disc_weight: float = 50.0,
        masked_count: str = "distinct",
    ):
        super().__init__()
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.generator = generator
        self.discriminator = discriminator
        share_embeddings(generator, discriminator, embedding_sharing)
        self.embedding_sharing = embedding_sharing
        self.mask_token_id = mask_token_id
        self.register_buffer("special_token_ids", torch.tensor(sorted(set(special_token_ids))), persistent=False)
        self.mask_prob = mask_prob
        self.max_predictions = max_predictions
        self.mask_token_share = mask_token_share
        self.random_token_share = random_token_share
        self.temperature = temperature
        self.gen_weight = gen_weight
        self.disc_weight = disc_weight
        self.masked_count = masked_count

    @property
    def encoder_model(self) -> ElectraDiscriminator:
        """The model whose encoder is pretrained for downstream use (and whose token states evaluate.py probes)."""
        return self.discriminator

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> ElectraOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        max_predictions = self.max_predictions or max_predictions_for(input_ids.shape[1], self.mask_prob)
        masked = mask_tokens(
            input_ids,
            attention_mask,
            self.special_token_ids,
            mask_token_id=self.mask_token_id,
            vocab_size=self.generator.config.vocab_size,
            mask_prob=self.mask_prob,
            max_predictions=max_predictions,
            mask_token_share=self.mask_token_share,
            random_token_share=self.random_token_share,
            masked_count=self.masked_count,
        )

        gen_logits = self.generator_logits(masked, attention_mask, token_type_ids)  # (B, P, V)
        weights = masked.weights.float()  # (B, P)
        num_predictions = weights.sum().clamp(min=1.0)
        token_mlm = F.cross_entropy(gen_logits.float().flatten(0, 1), masked.labels.flatten(), reduction="none")
        mlm_loss = (token_mlm * weights.flatten()).sum() / num_predictions

        sampled = self.sample_replacements(gen_logits.detach())  # (B, P), no gradient
        disc_input = input_ids.scatter(1, masked.positions, torch.where(masked.weights, sampled, masked.labels))
        is_replaced = disc_input != input_ids  # (B, L): a sample equal to the original is not a replacement
        disc_logits = self.discriminator(disc_input, attention_mask, token_type_ids)  # (B, L)
        token_mask = attention_mask.float()
        num_tokens = token_mask.sum().clamp(min=1.0)
        token_rtd = F.binary_cross_entropy_with_logits(disc_logits.float(), is_replaced.float(), reduction="none")
        rtd_loss = (token_rtd * token_mask).sum() / num_tokens

        loss = self.gen_weight * mlm_loss + self.disc_weight * rtd_loss
        metrics = self._metrics(gen_logits, masked, disc_logits, is_replaced, attention_mask.bool())
        return ElectraOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            rtd_loss=rtd_loss,
            metrics=metrics,
            masked=masked,
            gen_logits=gen_logits,
            sampled=sampled,
            disc_logits=disc_logits,
            is_replaced=is_replaced,
        )

    def generator_logits(
        self, masked: MaskedBatch, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """Vocabulary logits at the prediction slots only (B, P, V): no (B, L, V) tensor is built."""
        return self.generator(masked.input_ids, attention_mask, token_type_ids, positions=masked.positions)

    def sample_replacements(self, gen_logits: torch.Tensor) -> torch.Tensor:
        """Replacement ids (B, P) drawn from softmax(gen_logits / T) by Gumbel-max, as GR does."""
        return gumbel_sample(gen_logits, self.temperature)

    @torch.no_grad()
    def _metrics(
        self,
        gen_logits: torch.Tensor,
        masked: MaskedBatch,
        disc_logits: torch.Tensor,
        is_replaced: torch.Tensor,
        tokens: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        predicted = (disc_logits > 0) & tokens
        replaced = is_replaced & tokens
        true_positives = (predicted & replaced).sum().float()
        num_masked = masked.weights.sum().float()
        return {
            "gen_accuracy": ((gen_logits.argmax(-1) == masked.labels) & masked.weights).sum() / num_masked.clamp(min=1),
            "disc_accuracy": ((predicted == replaced) & tokens).sum() / tokens.sum().clamp(min=1),
            "replaced_fraction": replaced.sum() / num_masked.clamp(min=1),  # share of masked tokens that changed
            "disc_precision": true_positives / predicted.sum().clamp(min=1),
            "disc_recall": true_positives / replaced.sum().clamp(min=1),
            "masked_tokens": num_masked,
            "tokens": tokens.sum().float(),  # non-pad tokens in the batch
        }


class MaskedLM(nn.Module):
    """BERT-style masked-language modelling, the baseline ELECTRA is measured against: one encoder of the
    discriminator's size in `ElectraForMaskedLM`'s layout, the same masking as `Electra` (mask_tokens), the
    vocabulary projection only at the masked slots, loss = mean cross-entropy there (google-research/electra's
    `electra_objective=False`)."""

    special_token_ids: torch.Tensor  # a buffer: the ids never masked
    logged = ("loss", "mlm_loss", "mlm_accuracy")

    def __init__(
        self,
        model: ElectraGenerator,
        *,
        mask_token_id: int,
        special_token_ids: list[int],
        mask_prob: float = 0.15,
        max_predictions: int | None = None,
        mask_token_share: float = 0.85,
        random_token_share: float = 0.0,
        masked_count: str = "distinct",
    ):
        super().__init__()
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.model = model
        self.mask_token_id = mask_token_id
        self.register_buffer("special_token_ids", torch.tensor(sorted(set(special_token_ids))), persistent=False)
        self.mask_prob = mask_prob
        self.max_predictions = max_predictions
        self.mask_token_share = mask_token_share
        self.random_token_share = random_token_share
        self.masked_count = masked_count

    @property
    def encoder_model(self) -> ElectraGenerator:
        return self.model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        masked = mask_tokens(
            input_ids,
            attention_mask,
            self.special_token_ids,
            mask_token_id=self.mask_token_id,
            vocab_size=self.model.config.vocab_size,
            mask_prob=self.mask_prob,
            max_predictions=self.max_predictions or max_predictions_for(input_ids.shape[1], self.mask_prob),
            mask_token_share=self.mask_token_share,
            random_token_share=self.random_token_share,
            masked_count=self.masked_count,
        )
        logits = self.model(masked.input_ids, attention_mask, token_type_ids, positions=masked.positions)  # (B, P, V)
        weights = masked.weights.float()
        token_mlm = F.cross_entropy(logits.float().flatten(0, 1), masked.labels.flatten(), reduction="none")
        mlm_loss = (token_mlm * weights.flatten()).sum() / weights.sum().clamp(min=1.0)
        with torch.no_grad():
            num_masked = masked.weights.sum().float()
            correct = ((logits.argmax(-1) == masked.labels) & masked.weights).sum()
            metrics = {
                "mlm_accuracy": correct / num_masked.clamp(min=1),
                "masked_tokens": num_masked,
                "tokens": attention_mask.sum().float(),  # non-pad tokens in the batch
            }
        return MaskedLMOutput(loss=mlm_loss, mlm_loss=mlm_loss, metrics=metrics, masked=masked, gen_logits=logits)


Objective = Electra | MaskedLM  # what build.build_model returns for model.objective=rtd / mlm
