"""Export: `export/discriminator/` and `export/generator/`, transformers-format folders (config.json,
model.safetensors) with the tokenizer files, for ElectraForPreTraining / ElectraForMaskedLM."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load_model
from tokenizers import Tokenizer

from electra_pretrain.config import ModelConfig
from electra_pretrain.objective import Electra, build_electra
from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer


def export_models(electra: Electra, tokenizer: Tokenizer, out: Path, config_yaml: str | None = None) -> None:
    """Write out/discriminator and out/generator, each a transformers folder with the tokenizer files."""
    max_length = electra.discriminator.config.max_position_embeddings
    for name, model in (("discriminator", electra.discriminator), ("generator", electra.generator)):
        model.save_pretrained(out / name)
        save_tokenizer(tokenizer, out / name, model_max_length=max_length)
    if config_yaml is not None:
        (out / "train_config.yaml").write_text(config_yaml)


def checkpoint_model_config(folder: Path, name: str = "config.yaml") -> tuple[str, ModelConfig]:
    """The resolved training config text in `folder` and its model section; a damaged file is named in one line."""
    path = folder / name
    try:
        config_yaml = path.read_text()
        return config_yaml, ModelConfig(**OmegaConf.to_container(OmegaConf.create(config_yaml)["model"]))
    except (OmegaConfBaseException, yaml.YAMLError, TypeError, KeyError, UnicodeDecodeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a training config this version reads ({first})") from None


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> None:
    """Export a resume checkpoint folder on its own (its config.yaml and tokenizer/ say how to rebuild it)."""
    checkpoint, out = Path(checkpoint), Path(out)
    for needed in ("config.yaml", "tokenizer", "model.safetensors"):
        if not (checkpoint / needed).exists():
            raise FileNotFoundError(f"{checkpoint}: no {needed}; is this an output_dir/checkpoints/step_<N> folder?")
    config_yaml, model_config = checkpoint_model_config(checkpoint)
    tokenizer = load_tokenizer(checkpoint / "tokenizer")
    electra = build_electra(model_config, tokenizer)
    load_model(electra, str(checkpoint / "model.safetensors"), strict=True)
    export_models(electra, tokenizer, out, config_yaml)
