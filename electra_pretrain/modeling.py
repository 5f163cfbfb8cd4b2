"""ELECTRA encoder, MLM generator and replaced-token-detection discriminator.

The module tree mirrors transformers' `ElectraForMaskedLM` / `ElectraForPreTraining` so that `state_dict()` keys are
exactly transformers' keys: our `save_pretrained` folders load in transformers and theirs load here (docs/design.md,
"transformers compatibility contract"). Attention goes through `F.scaled_dot_product_attention`, except where the
packed-bits dropout applies (training on CPU, see dropout.py): there SDPA's math path is written out so that the
attention dropout mask is drawn the fast way. An eager path is kept for parity checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from electra_pretrain.dropout import Dropout, uses_packed
from electra_pretrain.files import verify_folder
from electra_pretrain.model_config import ATTN_IMPLEMENTATIONS, CONFIG_NAME, HIDDEN_ACTS, WEIGHTS_NAME, ElectraConfig
from electra_pretrain.weights import read_safetensors

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}
assert set(ACTIVATIONS) == set(HIDDEN_ACTS)


class ElectraEmbeddings(nn.Module):
    """Word + position + token-type embeddings (width E), then LayerNorm and dropout."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(word, position, token-type) tables; an override point for gradient-disentangled sharing."""
        return self.word_embeddings.weight, self.position_embeddings.weight, self.token_type_embeddings.weight

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        word, position, token_type = self.tables()
        seq_len = input_ids.shape[1]
        if seq_len > position.shape[0]:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings={position.shape[0]}")
        x = F.embedding(input_ids, word) + position[:seq_len]  # (B, L, E)
        x = x + (token_type[0] if token_type_ids is None else F.embedding(token_type_ids, token_type))
        return self.dropout(self.LayerNorm(x))


class ElectraSelfAttention(nn.Module):
    def __init__(self, config: ElectraConfig, attn_implementation: str):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)
        self.attn_implementation = attn_implementation

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, L, H); key_mask: (B, 1, 1, L) bool, True where a key may be attended to."""
        batch, length, _ = x.shape
        q, k, v = (
            proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, L, d)
            for proj in (self.query, self.key, self.value)
        )
        dropout_p = self.dropout.p if self.training else 0.0
        packed_dropout = dropout_p > 0.0 and uses_packed(self.dropout.implementation, x.device)
        if self.attn_implementation == "sdpa" and not packed_dropout:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
        else:
            # Eager; or SDPA's math path written out: with dropout, SDPA on CPU has no fused kernel and runs these
            # same steps, drawing its mask with bernoulli_, so here the mask comes from the packed generator.
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, nh, L, L)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            out = self.dropout(scores.softmax(-1)) @ v
        return out.transpose(1, 2).reshape(batch, length, -1)


class ElectraResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual); transformers' ElectraSelfOutput and ElectraOutput."""

    def __init__(self, config: ElectraConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class ElectraAttention(nn.Module):
    def __init__(self, config: ElectraConfig, attn_implementation: str):
        super().__init__()
        self.self = ElectraSelfAttention(config, attn_implementation)
        self.output = ElectraResidualOutput(config, config.hidden_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, key_mask), x)


class ElectraIntermediate(nn.Module):
    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class ElectraLayer(nn.Module):
    def __init__(self, config: ElectraConfig, attn_implementation: str):
        super().__init__()
        self.attention = ElectraAttention(config, attn_implementation)
        self.intermediate = ElectraIntermediate(config)
        self.output = ElectraResidualOutput(config, config.intermediate_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, key_mask)
        return self.output(self.intermediate(x), x)


class ElectraEncoder(nn.Module):
    def __init__(self, config: ElectraConfig, attn_implementation: str):
        super().__init__()
        self.layer = nn.ModuleList(ElectraLayer(config, attn_implementation) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, key_mask)
        return x


class ElectraModel(nn.Module):
    """Embeddings (E) -> optional projection to H -> transformer layers; returns hidden states (B, L, H)."""

    def __init__(self, config: ElectraConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation={attn_implementation!r}; choose one of {ATTN_IMPLEMENTATIONS}")
        self.embeddings = ElectraEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = ElectraEncoder(config, attn_implementation)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
        return self.encoder(x, key_mask)


class ElectraPreTrainedBase(nn.Module):
    """Weight init (GR: truncated normal, std 0.02) and the transformers folder format shared by both models."""

    architecture: str

    def __init__(self, config: ElectraConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        self.electra = ElectraModel(config, attn_implementation)

    def init_weights(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def config_extras(self) -> dict:
        """Fields config.json needs beyond ElectraConfig's (a task head's labels); none for the pretraining models."""
        return {}

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under transformers' key names, with shared tables materialised into this model's own copy."""
        state = {k: v.detach() for k, v in self.state_dict().items()}
        word, position, token_type = (t.detach() for t in self.electra.embeddings.tables())
        state = {k: v for k, v in state.items() if not k.startswith("electra.embeddings.")}
        state["electra.embeddings.word_embeddings.weight"] = word
        state["electra.embeddings.position_embeddings.weight"] = position
        state["electra.embeddings.token_type_embeddings.weight"] = token_type
        layer_norm = self.electra.embeddings.LayerNorm
        state["electra.embeddings.LayerNorm.weight"] = layer_norm.weight.detach()
        state["electra.embeddings.LayerNorm.bias"] = layer_norm.bias.detach()
        return state

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory, self.architecture, self.config_extras())
        tensors = {k: v.float().contiguous().cpu().clone() for k, v in self.export_state_dict().items()}
        save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | Path, attn_implementation: str = "sdpa", verify: bool = True):
        """A folder this project or transformers wrote; checked against its checksums.json first when `verify`."""
        directory = Path(directory)
        config = ElectraConfig.load(directory)
        if verify:
            verify_folder(directory)
        architectures = json.loads((directory / CONFIG_NAME).read_text()).get("architectures") or []  # valid: loaded
        if architectures and cls.architecture not in architectures:
            raise ValueError(
                f"{directory}: holds {', '.join(architectures)} weights (config.json architectures), "
                f"not {cls.architecture}"
            )
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: no model.safetensors (only safetensors weights are loaded)")
        model = cls(config, attn_implementation)
        model.load_weights(read_safetensors(weights), source=str(weights))
        return model

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load transformers-named weights strictly: missing, unexpected or misshaped keys raise, naming them."""
        state = self._drop_tied_keys(dict(state), source)
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source}: weights do not match {type(self).__name__}"
                f"{f'; missing keys: {missing}' if missing else ''}"
                f"{f'; unexpected keys: {unexpected}' if unexpected else ''}"
            )
        misshaped = [
            f"{k}: checkpoint {tuple(v.shape)} vs config {tuple(expected[k].shape)}"
            for k, v in state.items()
            if v.shape != expected[k].shape
        ]
        if misshaped:
            raise ValueError(f"{source}: weights do not match config.json ({'; '.join(misshaped)})")
        self.load_state_dict(state, strict=True)

    def _drop_tied_keys(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        return state


class ElectraDiscriminatorPredictions(nn.Module):
    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(x))).squeeze(-1)


class ElectraDiscriminator(ElectraPreTrainedBase):
    """Replaced-token detector; loads as transformers' ElectraForPreTraining."""

    architecture = "ElectraForPreTraining"

    def __init__(self, config: ElectraConfig, attn_implementation: str = "sdpa"):
        super().__init__(config, attn_implementation)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Returns replaced-token logits (B, L)."""
        return self.discriminator_predictions(self.electra(input_ids, attention_mask, token_type_ids))


class ElectraGeneratorPredictions(nn.Module):
    """H -> E, GELU (hard-coded in transformers whatever hidden_act says), LayerNorm(E)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class TiedLMHead(nn.Module):
    """Output layer whose weight *is* the word-embedding table, looked up at call time so it can never come untied.

    Only the bias is a parameter here (key `generator_lm_head.bias`); transformers ties `generator_lm_head.weight`.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        # In fp32, outside autocast: replacements are sampled from these logits (Gumbel noise on bf16-rounded
        # logits skews the samples) and the MLM loss is taken on them; the generator computes them at the
        # prediction slots only, so this matmul is small.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(x.float(), word_embeddings.float(), self.bias.float())


class ElectraGenerator(ElectraPreTrainedBase):
    """Small masked-language model; loads as transformers' ElectraForMaskedLM."""

    architecture = "ElectraForMaskedLM"

    def __init__(self, config: ElectraConfig, attn_implementation: str = "sdpa"):
        super().__init__(config, attn_implementation)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = TiedLMHead(config.vocab_size)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vocabulary logits: (B, L, V) for every token, or only at `positions`:

        a bool mask (B, L) gives (N, V) for its N true entries; an index tensor (B, P) gives (B, P, V) without a
        host sync (the training path uses this, so no (B, L, V) tensor is ever built).
        """
        hidden = self.electra(input_ids, attention_mask, token_type_ids)  # (B, L, H)
        if positions is not None and positions.dtype == torch.bool:
            hidden = hidden[positions]  # (N, H)
        elif positions is not None:
            hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, P, H)
        word_embeddings = self.electra.embeddings.tables()[0]
        return self.generator_lm_head(self.generator_predictions(hidden), word_embeddings)

    def _drop_tied_keys(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        # Checkpoints saved by older transformers (and google's released ones) repeat the tied output weight.
        head = state.pop("generator_lm_head.weight", None)
        embeddings = state.get("electra.embeddings.word_embeddings.weight")
        if head is not None and embeddings is not None and not torch.equal(head, embeddings):
            raise ValueError(
                f"{source}: generator_lm_head.weight differs from the word embeddings; "
                "untied generator output layers are not supported"
            )
        return state
