"""Export: `export/discriminator/` and `export/generator/` (ELECTRA), or `export/mlm/` (the masked-LM baseline),
transformers-format folders (config.json, model.safetensors) with the tokenizer files, for ElectraForPreTraining /
ElectraForMaskedLM. Each folder carries
a model card (README.md: sizes, tokenizer, data, steps and tokens seen, held-out metrics, the command) and its own
copy of the training config, and every file is readable like any other (mode 0644 under the usual umask)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from omegaconf.errors import OmegaConfBaseException
from tokenizers import Tokenizer

from electra_pretrain.files import CHECKSUMS_FILE, checksums, publish_folder, staging
from electra_pretrain.jobs import yaml_mapping
from electra_pretrain.pretrain.build import build_model
from electra_pretrain.pretrain.checkpoint import verify_checkpoint
from electra_pretrain.pretrain.config import ModelConfig
from electra_pretrain.pretrain.objective import Electra, MaskedLM, Objective
from electra_pretrain.tokenizer import is_lowercase, load_tokenizer, save_tokenizer
from electra_pretrain.weights import DISCRIMINATOR_FOLDER, GENERATOR_FOLDER, MASKED_LM_FOLDER, load_module_weights

TRAIN_CONFIG = "train_config.yaml"


def export_model(
    model: Objective, tokenizer: Tokenizer, out: Path, config_yaml: str | None = None, provenance: dict | None = None
) -> list[Path]:
    """Write the objective's models as transformers folders with the tokenizer files: out/discriminator and
    out/generator (ELECTRA), or out/mlm (the masked-LM baseline); returns the folders.

    `provenance`: what the model card reports beyond the weights (step, tokens, held-out metrics, command).
    The folders are written beside `out`, each with its checksums.json, fsynced and renamed into place together: a
    kill or a full disk leaves the previous export or none, never a part of one.
    """
    if isinstance(model, Electra):
        parts = {DISCRIMINATOR_FOLDER: model.discriminator, GENERATOR_FOLDER: model.generator}
    else:
        assert isinstance(model, MaskedLM)
        parts = {MASKED_LM_FOLDER: model.model}
    max_length = model.encoder_model.config.max_position_embeddings
    with staging(out) as staged:
        for name, part in parts.items():
            part.save_pretrained(staged / name)
            save_tokenizer(tokenizer, staged / name, model_max_length=max_length)
            if config_yaml is not None:
                (staged / name / TRAIN_CONFIG).write_text(config_yaml)
            (staged / name / "README.md").write_text(
                pretrained_model_card(name, part, tokenizer, config_yaml, provenance or {})
            )
            (staged / name / CHECKSUMS_FILE).write_text(json.dumps(checksums(staged / name), indent=1) + "\n")
        if config_yaml is not None:
            (staged / TRAIN_CONFIG).write_text(config_yaml)
        readable = 0o666 & ~_umask()
        for path in staged.rglob("*"):
            path.chmod(readable | 0o111 if path.is_dir() else readable)
        publish_folder(staged, out, with_checksums=False)
    return [out / name for name in parts]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pretrained_model_card(name: str, model, tokenizer: Tokenizer, config_yaml: str | None, provenance: dict) -> str:
    config = model.config
    architecture = model.architecture
    trained = yaml_mapping(config_yaml) if config_yaml else {}
    data = trained.get("data", {})
    source = data.get("files") or data.get("hub") or [s.get("files") or s.get("hub") for s in data.get("sources", [])]
    objective = (
        "masked-language modelling, the BERT-style baseline" if name == MASKED_LM_FOLDER else "replaced-token detection"
    )
    lines = [
        f"# {'masked LM' if name == MASKED_LM_FOLDER else f'ELECTRA {name}'} ({architecture})",
        "",
        f"Pretrained with electra-pretrain ({objective}).",
        "",
        "| | |",
        "|---|---|",
        f"| layers x hidden | {config.num_hidden_layers} x {config.hidden_size} (embeddings {config.embedding_size}, "
        f"FFN {config.intermediate_size}, {config.num_attention_heads} heads) |",
        f"| parameters | {sum(p.numel() for p in model.export_state_dict().values()) / 1e6:.2f}M |",
        f"| tokenizer | WordPiece, {tokenizer.get_vocab_size()} tokens, "
        f"{'uncased' if is_lowercase(tokenizer) else 'cased'} |",
        f"| data | {source or 'unknown'} (max_seq_length {data.get('max_seq_length', '?')}) |",
    ]
    if "step" in provenance:
        lines.append(f"| trained | {provenance['step']} steps, {provenance.get('tokens', 0):,} non-pad tokens |")
    for key, value in sorted(provenance.get("held_out", {}).items()):
        lines.append(f"| held-out {key} | {value:.4f} |")
    if provenance.get("command"):
        lines.append(f"| command | `{provenance['command']}` |")
    usage = architecture
    lines += [
        "",
        "```python",
        f"from transformers import {usage}, ElectraTokenizerFast",
        f'model = {usage}.from_pretrained("PATH")',
        'tokenizer = ElectraTokenizerFast.from_pretrained("PATH")',
        "```",
        "",
        f"The training config is in `{TRAIN_CONFIG}` beside this card.",
        "",
    ]
    return "\n".join(lines)


def checkpoint_model_config(folder: Path, name: str = "config.yaml") -> tuple[str, ModelConfig]:
    """The resolved training config text in `folder` and its model section; a damaged file is named in one line."""
    path = folder / name
    try:
        config_yaml = path.read_text()
        return config_yaml, ModelConfig(**yaml_mapping(config_yaml)["model"])
    except (OmegaConfBaseException, yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a training config this version reads ({first})") from None


def export_checkpoint(checkpoint: str | Path, out: str | Path, verify: bool = True) -> list[Path]:
    """Export a resume checkpoint folder on its own (its config.yaml and tokenizer/ say how to rebuild it);
    returns the folders written."""
    checkpoint, out = Path(checkpoint), Path(out)
    for needed in ("config.yaml", "tokenizer", "model.safetensors"):
        if not (checkpoint / needed).exists():
            raise FileNotFoundError(f"{checkpoint}: no {needed}; is this an output_dir/checkpoints/step_<N> folder?")
    config_yaml, model_config = checkpoint_model_config(checkpoint)
    tokenizer = load_tokenizer(checkpoint / "tokenizer")
    model = build_model(model_config, tokenizer, load_pretrained=False)  # the checkpoint holds the weights
    if verify:
        verify_checkpoint(checkpoint)
    load_module_weights(model, checkpoint / "model.safetensors")
    state = (
        json.loads((checkpoint / "trainer_state.json").read_text())
        if (checkpoint / "trainer_state.json").is_file()
        else {}
    )
    return export_model(
        model,
        tokenizer,
        out,
        config_yaml,
        {
            "step": state.get("step", 0),
            "tokens": state.get("train_state", {}).get("tokens", 0),
            "command": f"electra-pretrain export {checkpoint} --out {out}",
        },
    )
