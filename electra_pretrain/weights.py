"""Reading model weights and configs from transformers-format folders, safely.

Weights come from `model.safetensors`, or from a `pytorch_model.bin` through `torch.load(weights_only=True)` (no
code runs on load); a folder's config.json is checked against the tokenizer that will feed the model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from electra_pretrain.model_config import ElectraConfig
from electra_pretrain.modeling import WEIGHTS_NAME
from electra_pretrain.tokenizer import token_id

log = logging.getLogger(__name__)
PICKLED_WEIGHTS = "pytorch_model.bin"
# An export root of this project holds discriminator/ + generator/ (ELECTRA) or mlm/ (the masked-LM baseline).
DISCRIMINATOR_FOLDER, GENERATOR_FOLDER, MASKED_LM_FOLDER = "discriminator", "generator", "mlm"


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin through `torch.load(weights_only=True)` (no code runs on load)."""
    if (folder / WEIGHTS_NAME).is_file():
        return load_file(folder / WEIGHTS_NAME)
    if (folder / PICKLED_WEIGHTS).is_file():
        try:
            return torch.load(folder / PICKLED_WEIGHTS, map_location="cpu", weights_only=True)
        except Exception as error:  # an UnpicklingError names the object it refused
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(
                f"{folder / PICKLED_WEIGHTS}: refused by torch.load(weights_only=True) ({first}); "
                "only plain tensors are loaded from pickles"
            ) from None
    raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} or {PICKLED_WEIGHTS}")


def checked_config(folder: Path, tokenizer: Tokenizer) -> ElectraConfig:
    """The folder's config.json, checked against the tokenizer that will feed it."""
    config = ElectraConfig.load(folder)
    if config.vocab_size != tokenizer.get_vocab_size():
        raise ValueError(
            f"{folder / 'config.json'}: vocab_size={config.vocab_size}, but the tokenizer has "
            f"{tokenizer.get_vocab_size()} tokens; use the tokenizer the checkpoint was trained with "
            "(the model folder's, the default; tokenizer.path in train.py, tokenizer_path in finetune.py)"
        )
    pad = token_id(tokenizer, "[PAD]")
    if config.pad_token_id != pad:
        log.warning(
            "%s: pad_token_id=%d, the tokenizer's [PAD] is %d; using the tokenizer's", folder, config.pad_token_id, pad
        )
        config.pad_token_id = pad
    return config
