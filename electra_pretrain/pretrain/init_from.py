"""Start from transformers-format folders: continued pretraining from a released or exported pair.

`model.init_from=DIR` names an export root of this project (DIR/discriminator + DIR/generator);
`model.init_discriminator=DIR [model.init_generator=DIR]` name folders in the layout of the released
`google/electra-*-discriminator` / `-generator` checkpoints (config.json + model.safetensors, or a
pytorch_model.bin read with `torch.load(weights_only=True)`). The sizes come from the folders' config.json and
replace the preset's. The released pairs store the shared embedding tables in both folders: with tied sharing they
are loaded once, after checking that the two copies agree (the discriminator's is used when they do not). With only
a discriminator, a fresh generator of the configured width shares its tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tokenizers import Tokenizer

from electra_pretrain.jobs import yaml_mapping
from electra_pretrain.model_config import generator_config
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.config import ModelConfig
from electra_pretrain.weights import checked_config, read_weights

log = logging.getLogger(__name__)
SHARED_TABLES = (
    "electra.embeddings.word_embeddings.weight",
    "electra.embeddings.position_embeddings.weight",
    "electra.embeddings.token_type_embeddings.weight",
    "electra.embeddings.LayerNorm.weight",
    "electra.embeddings.LayerNorm.bias",
)


def init_folders(config: ModelConfig) -> tuple[Path, Path | None] | None:
    """(discriminator folder, generator folder or None), or None for a model built from scratch."""
    if config.init_from:
        root = Path(config.init_from)
        for name in ("discriminator", "generator"):
            if not (root / name / "config.json").is_file():
                raise FileNotFoundError(
                    f"model.init_from={root}: no {name}/config.json (an export folder holds "
                    "discriminator/ and generator/; for two folders use model.init_discriminator "
                    "and model.init_generator)"
                )
        return root / "discriminator", root / "generator"
    if config.init_discriminator:
        return Path(config.init_discriminator), Path(config.init_generator) if config.init_generator else None
    return None


def pretrained_pair(
    config: ModelConfig, tokenizer: Tokenizer, folders: tuple[Path, Path | None], load: bool = True
) -> tuple[ElectraGenerator, ElectraDiscriminator]:
    """The generator and discriminator the folders describe, their weights loaded when `load`."""
    disc_folder, gen_folder = folders
    disc_config = checked_config(disc_folder, tokenizer)
    discriminator = ElectraDiscriminator(disc_config, config.attn_implementation)
    if gen_folder is not None:
        generator = ElectraGenerator(checked_config(gen_folder, tokenizer), config.attn_implementation)
    else:
        generator = ElectraGenerator(
            generator_config(disc_config, config.generator_hidden_fraction), config.attn_implementation
        )
    if not load:
        return generator, discriminator
    disc_weights = read_weights(disc_folder, config.verify_checksums)
    discriminator.load_weights(disc_weights, str(disc_folder))
    if gen_folder is not None:
        gen_weights = read_weights(gen_folder, config.verify_checksums)
        if config.embedding_sharing == "tied":
            differing = [
                k for k in SHARED_TABLES if k in gen_weights and not torch.equal(gen_weights[k], disc_weights[k])
            ]
            if differing:
                log.warning(
                    "the two folders' copies of the shared embeddings differ (%s); using the discriminator's",
                    ", ".join(differing),
                )
            gen_weights = {**gen_weights, **{k: disc_weights[k] for k in SHARED_TABLES}}
            gen_weights.pop("generator_lm_head.weight", None)  # tied to the (now shared) word table
        generator.load_weights(gen_weights, str(gen_folder))
    elif config.embedding_sharing == "tied":
        generator.load_weights(
            {
                **{k: v for k, v in generator.state_dict().items() if k not in SHARED_TABLES},
                **{k: disc_weights[k] for k in SHARED_TABLES},
            },
            str(disc_folder),
        )
    return generator, discriminator


def describe(config: ModelConfig, folders: tuple[Path, Path | None]) -> str:
    disc_folder, gen_folder = folders
    generator = (
        f"generator from {gen_folder}"
        if gen_folder
        else f"a fresh generator ({config.generator_hidden_fraction:g} of the width) sharing its embeddings"
    )
    return (
        f"model:         discriminator from {disc_folder}, {generator}; sizes from their config.json (the "
        f"preset {config.preset!r} is not used)"
    )


# The settings of a pretraining recipe that continuing from an export should keep, or change knowingly.
RECIPE_KEYS = (
    "model.temperature",
    "model.mask_prob",
    "model.mask_token_share",
    "model.random_token_share",
    "model.masked_count",
    "model.gen_weight",
    "model.disc_weight",
    "model.embedding_sharing",
    "optim.lr",
    "optim.bias_correction",
    "optim.weight_decay",
    "trainer.global_batch_size",
    "data.max_seq_length",
)


def recipe_differences(folders: tuple[Path, Path | None], current: dict) -> tuple[Path, list[str]] | None:
    """(the export's train_config.yaml, "key: there -> here" for each recipe key that differs) when the folders come
    from an export of this project that carries its training config; None otherwise."""
    disc_folder = folders[0]
    found = next(
        (p for p in (disc_folder / "train_config.yaml", disc_folder.parent / "train_config.yaml") if p.is_file()), None
    )
    if found is None:
        return None
    saved = yaml_mapping(found.read_text())

    def value(config: dict, key: str):
        for part in key.split("."):
            config = config.get(part, {}) if isinstance(config, dict) else {}
        return config if config != {} else None

    return found, [
        f"{key} {value(saved, key)!r} there -> {value(current, key)!r} here"
        for key in RECIPE_KEYS
        if value(saved, key) != value(current, key)
    ]
