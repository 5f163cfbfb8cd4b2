"""Replaced-token detection on one sentence with an exported discriminator (`electra-pretrain detect`)."""

from __future__ import annotations

from pathlib import Path

import torch

from electra_pretrain.modeling import ElectraDiscriminator
from electra_pretrain.tokenizer import load_tokenizer


def replaced_probabilities(model_dir: str | Path, sentence: str) -> list[dict]:
    """[{"token": ..., "probability": ...}] for every token of the sentence but [CLS] and [SEP]: the
    discriminator's probability that the token was replaced."""
    model = ElectraDiscriminator.from_pretrained(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)
    if tokenizer.get_vocab_size() != model.config.vocab_size:
        raise ValueError(
            f"{model_dir}: tokenizer has {tokenizer.get_vocab_size()} tokens, the model {model.config.vocab_size}"
        )
    encoding = tokenizer.encode(sentence)
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.tensor([encoding.ids]), token_type_ids=torch.tensor([encoding.type_ids])))[0]
    return [
        {"token": token, "probability": round(prob, 4)}
        for token, prob in zip(encoding.tokens, probs.tolist())
        if token not in ("[CLS]", "[SEP]")
    ]
