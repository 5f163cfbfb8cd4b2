"""Replaced-token detection on one text with an exported discriminator (`electra-pretrain detect`).

A text longer than the model's positions is scored in consecutive windows, each `[CLS] ... [SEP]` (the caller is
told how many); an empty text is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from electra_pretrain.modeling import ElectraDiscriminator
from electra_pretrain.tokenizer import load_tokenizer, token_id


def replaced_probabilities(model_dir: str | Path, text: str, verify: bool = True) -> tuple[list[dict], int]:
    """([{"token": ..., "probability": ...}] for every token of the text: the discriminator's probability that it
    was replaced, the number of windows it was scored in)."""
    model = ElectraDiscriminator.from_pretrained(model_dir, verify=verify).eval()
    tokenizer = load_tokenizer(model_dir)
    if tokenizer.get_vocab_size() != model.config.vocab_size:
        raise ValueError(
            f"{model_dir}: tokenizer has {tokenizer.get_vocab_size()} tokens, the model {model.config.vocab_size}"
        )
    encoding = tokenizer.encode(text, add_special_tokens=False)
    if not encoding.ids:
        raise ValueError("detect: the text is empty (no token to score)")
    width = model.config.max_position_embeddings - 2
    cls, sep = token_id(tokenizer, "[CLS]"), token_id(tokenizer, "[SEP]")
    probabilities: list[float] = []
    windows = range(0, len(encoding.ids), width)
    with torch.no_grad():
        for start in windows:
            ids = torch.tensor([[cls, *encoding.ids[start : start + width], sep]])
            probabilities += torch.sigmoid(model(ids))[0, 1:-1].tolist()
    rows = [{"token": token, "probability": round(p, 4)} for token, p in zip(encoding.tokens, probabilities)]
    return rows, len(windows)
