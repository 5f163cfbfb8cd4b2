"""Building the pretraining model for a config and a tokenizer: the joint `Electra` module (model.objective=rtd),
fresh or from the folders of model.init_from, or the `MaskedLM` baseline (model.objective=mlm).

The vocabulary size and the special tokens come from the tokenizer (by name); sizes from the model config, or from
the folders' config.json when continuing from them.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from torch import nn

from electra_pretrain.dropout import set_dropout_implementation
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.config import ModelConfig
from electra_pretrain.pretrain.init_from import init_folders, pretrained_pair
from electra_pretrain.pretrain.objective import Electra, MaskedLM, Objective
from electra_pretrain.tokenizer import special_token_ids


@torch.no_grad()
def original_init(electra: Electra) -> None:
    """google-research/electra modeling.py builds `embeddings_project` and the discriminator's final 1-unit layer
    with tf.layers.dense and no initializer, i.e. Glorot-uniform weights and zero biases (everything else: the
    truncated normal, std 0.02, that ElectraPreTrainedBase.init_weights uses)."""
    layers = [electra.discriminator.discriminator_predictions.dense_prediction]
    layers += [
        m.electra.embeddings_project
        for m in (electra.generator, electra.discriminator)
        if hasattr(m.electra, "embeddings_project")
    ]
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)


def build_model(config: ModelConfig, tokenizer: Tokenizer, load_pretrained: bool = True) -> Objective:
    """The model of config.objective: `Electra` (rtd) or `MaskedLM` (mlm)."""
    if config.objective == "mlm":
        specials = special_token_ids(tokenizer)
        model = ElectraGenerator(
            config.discriminator(tokenizer.get_vocab_size(), specials["pad"]), config.attn_implementation
        )
        masked_lm = masked_lm_module(model, config, tokenizer)
        if config.original_init and hasattr(model.electra, "embeddings_project"):
            with torch.no_grad():  # GR builds it with tf.layers.dense: Glorot-uniform, zero bias
                nn.init.xavier_uniform_(model.electra.embeddings_project.weight)
                nn.init.zeros_(model.electra.embeddings_project.bias)
        return masked_lm
    return build_electra(config, tokenizer, load_pretrained)


def masked_lm_module(model: ElectraGenerator, config: ModelConfig, tokenizer: Tokenizer) -> MaskedLM:
    """`MaskedLM` around a built model, with the masking settings of `config`."""
    specials = special_token_ids(tokenizer)
    masked_lm = MaskedLM(
        model,
        mask_token_id=specials["mask"],
        special_token_ids=[specials[name] for name in ("pad", "cls", "sep", "mask")],
        mask_prob=config.mask_prob,
        mask_token_share=config.mask_token_share,
        random_token_share=config.random_token_share,
        masked_count=config.masked_count,
    )
    set_dropout_implementation(masked_lm, config.dropout_implementation)
    return masked_lm


def build_electra(config: ModelConfig, tokenizer: Tokenizer, load_pretrained: bool = True) -> Electra:
    """The joint module for a model config and a tokenizer (vocabulary size and special tokens by name); from the
    folders of `model.init_from` / `init_discriminator` when set (their weights loaded when `load_pretrained`)."""
    specials = special_token_ids(tokenizer)
    vocab_size = tokenizer.get_vocab_size()
    folders = init_folders(config)
    if folders is not None:
        generator, discriminator = pretrained_pair(config, tokenizer, folders, load=load_pretrained)
    else:
        generator = ElectraGenerator(config.generator(vocab_size, specials["pad"]), config.attn_implementation)
        discriminator = ElectraDiscriminator(
            config.discriminator(vocab_size, specials["pad"]), config.attn_implementation
        )
    electra = joint_module(generator, discriminator, config, tokenizer)
    if config.original_init and folders is None:
        original_init(electra)
    return electra


def joint_module(
    generator: ElectraGenerator,
    discriminator: ElectraDiscriminator,
    config: ModelConfig,
    tokenizer: Tokenizer,
    embedding_sharing: str | None = None,
) -> Electra:
    """`Electra` around two built models with the objective settings of `config` (`embedding_sharing` overrides
    the config's, e.g. "none" for two exported folders that each hold their own copy of the tables)."""
    specials = special_token_ids(tokenizer)
    electra = Electra(
        generator,
        discriminator,
        mask_token_id=specials["mask"],
        special_token_ids=[specials[name] for name in ("pad", "cls", "sep", "mask")],
        embedding_sharing=embedding_sharing or config.embedding_sharing,
        mask_prob=config.mask_prob,
        mask_token_share=config.mask_token_share,
        random_token_share=config.random_token_share,
        temperature=config.temperature,
        gen_weight=config.gen_weight,
        disc_weight=config.disc_weight,
        masked_count=config.masked_count,
    )
    set_dropout_implementation(electra, config.dropout_implementation)
    return electra
