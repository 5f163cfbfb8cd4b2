"""Reading model weights and configs from transformers-format folders, safely and verified.

Weights come from `model.safetensors`, or from a `pytorch_model.bin` through `torch.load(weights_only=True)` (no
code runs on load). A folder's files are checked against its checksums.json when it has one (files.py); a damaged
or truncated weights file is one line naming it; every tensor must be finite (NaN / inf weights are named, not
trained on). A folder's config.json is checked against the tokenizer that will feed the model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model
from tokenizers import Tokenizer

from electra_pretrain.failures import first_line
from electra_pretrain.files import verify_folder
from electra_pretrain.model_config import WEIGHTS_NAME, ElectraConfig
from electra_pretrain.tokenizer import token_id

log = logging.getLogger(__name__)
PICKLED_WEIGHTS = "pytorch_model.bin"
# An export root of this project holds discriminator/ + generator/ (ELECTRA) or mlm/ (the masked-LM baseline).
DISCRIMINATOR_FOLDER, GENERATOR_FOLDER, MASKED_LM_FOLDER = "discriminator", "generator", "mlm"


def read_safetensors(path: Path, finite: bool = True) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a damaged or truncated file, or (with `finite`) a non-finite tensor, is a
    one-line error naming it."""
    try:
        state = load_file(str(path))
    except Exception as error:  # SafetensorError, or OSError on a truncated header
        raise ValueError(
            f"{path}: not a readable safetensors file ({first_line(error)}); it is damaged or truncated"
        ) from None
    if finite:
        check_finite(state, str(path))
    return state


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{source}: tensor {name} holds non-finite values (NaN or inf); the weights are damaged "
                "or come from a run that diverged"
            )


def load_module_weights(module: torch.nn.Module, path: Path) -> None:
    """A checkpoint's model.safetensors into `module` (strict; shared tensors stored once), read safely."""
    try:
        load_model(module, str(path), strict=True)
    except (RuntimeError, OSError, ValueError) as error:
        if "Missing key" in str(error) or "Unexpected key" in str(error):
            raise ValueError(f"{path}: the weights do not fit this model ({first_line(error)})") from None
        raise ValueError(
            f"{path}: not a readable safetensors file ({first_line(error)}); it is damaged or truncated"
        ) from None
    except Exception as error:  # safetensors' own error type
        raise ValueError(
            f"{path}: not a readable safetensors file ({first_line(error)}); it is damaged or truncated"
        ) from None
    check_finite(dict(module.state_dict()), str(path))


def read_weights(folder: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin through `torch.load(weights_only=True)` (no code runs on load);
    the folder checked against its checksums.json first when `verify`."""
    if verify:
        verify_folder(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return read_safetensors(folder / WEIGHTS_NAME)
    if (folder / PICKLED_WEIGHTS).is_file():
        try:
            state = torch.load(folder / PICKLED_WEIGHTS, map_location="cpu", weights_only=True)
        except Exception as error:  # an UnpicklingError names the object it refused
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(
                f"{folder / PICKLED_WEIGHTS}: refused by torch.load(weights_only=True) ({first}); "
                "only plain tensors are loaded from pickles"
            ) from None
        check_finite(state, str(folder / PICKLED_WEIGHTS))
        return state
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
