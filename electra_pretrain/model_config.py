"""ELECTRA architecture hyperparameters: transformers' `ElectraConfig` fields, config.json, the paper's sizes.

No torch here: the configs, the command line and `--help` read these without loading a model library.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DROPOUT_IMPLEMENTATIONS = ("auto", "torch", "packed")  # auto: packed on CPU, torch on GPU (dropout.py)
HIDDEN_ACTS = ("gelu", "gelu_new", "relu", "silu")  # modeling.ACTIVATIONS implements each
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class ElectraConfig:
    """Model hyperparameters under transformers' `ElectraConfig` field names (written as config.json)."""

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ElectraConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ElectraConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"ElectraConfig.hidden_act={self.hidden_act!r} is not one of {list(HIDDEN_ACTS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ElectraConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self, architecture: str, extras: dict | None = None) -> dict:
        """`extras`: fields of a task model's config.json (num_labels, id2label, ...) beyond the encoder's."""
        return {**dataclasses.asdict(self), **(extras or {}), "model_type": "electra", "architectures": [architecture]}

    def save(self, directory: str | Path, architecture: str, extras: dict | None = None) -> None:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(architecture, extras), indent=2, sort_keys=True) + "\n")

    @classmethod
    def architectures(cls, directory: str | Path) -> list[str]:
        """config.json's `architectures` (which head the weights carry); empty when it names none."""
        cls.load(directory)  # a missing or damaged config.json is named here
        raw = json.loads((Path(directory) / CONFIG_NAME).read_text())
        return list(raw.get("architectures") or [])

    @classmethod
    def load(cls, directory: str | Path) -> ElectraConfig:
        """Read config.json; fields transformers adds that do not shape the weights (summary_*, ...) are ignored."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no config.json (is this an exported model folder?)")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a JSON model config ({error})") from None
        if raw.get("model_type", "electra") != "electra":
            raise ValueError(f"{path}: model_type={raw['model_type']!r}, expected 'electra'")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: position_embedding_type={raw['position_embedding_type']!r} is not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


# Sizes of google-research/electra configure_pretraining.py; `tiny` is ours, for tests and the CPU demo.
PRESETS: dict[str, dict] = {
    "tiny": dict(
        embedding_size=64,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=128,
    ),
    "small": dict(
        embedding_size=128, hidden_size=256, num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024
    ),
    "base": dict(
        embedding_size=768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
    "large": dict(
        embedding_size=1024, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
}


def preset_config(name: str, **overrides) -> ElectraConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ElectraConfig(**{**PRESETS[name], **overrides})


def generator_config(discriminator: ElectraConfig, hidden_fraction: float) -> ElectraConfig:
    """The generator as GR's get_generator_config builds it: same depth and embeddings, a fraction of the width."""
    if not 0.0 < hidden_fraction <= 1.0:
        raise ValueError(f"generator hidden fraction must be in (0, 1], got {hidden_fraction}")
    hidden = max(1, round(discriminator.hidden_size * hidden_fraction))
    return dataclasses.replace(
        discriminator, hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=max(1, hidden // 64)
    )
