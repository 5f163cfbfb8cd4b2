"""Continued pretraining from transformers-format folders, built here (no hub access)."""

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file

from electra_pretrain.pretrain.build import build_electra
from electra_pretrain.pretrain.config import ModelConfig
from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer

from .helpers.runs import metrics, overrides, train


@pytest.fixture(scope="module")
def released_pair(corpus, tmp_path_factory):
    """A discriminator / generator pair in the layout of google's released checkpoints: transformers'
    save_pretrained, the shared embeddings stored in both folders, the tokenizer in the discriminator folder."""
    root = tmp_path_factory.mktemp("released")
    tokenizer = load_tokenizer(corpus.parent / "tokenizer")
    common = dict(
        vocab_size=tokenizer.get_vocab_size(),
        embedding_size=32,
        max_position_embeddings=128,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    torch.manual_seed(0)
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, **common
        )
    )
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=1, intermediate_size=64, **common
        )
    )
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    disc.save_pretrained(root / "discriminator")
    gen.save_pretrained(root / "generator")
    save_tokenizer(tokenizer, root / "discriminator")
    return root


@pytest.mark.slow
def test_lr_zero_step_exports_exactly_the_loaded_tensors(corpus, released_pair, tmp_path):
    out = tmp_path / "continued"
    args = [a for a in overrides(corpus, out, "trainer.max_steps=1", "optim.lr=0") if not a.startswith("tokenizer")]
    result = train(
        [
            *args,
            f"model.init_discriminator={released_pair / 'discriminator'}",
            f"model.init_generator={released_pair / 'generator'}",
        ]
    )
    assert "discriminator from" in result.stdout and "sizes from their config.json" in result.stdout
    assert metrics(out)[0]["loss"] > 0
    for name in ("discriminator", "generator"):
        loaded = load_file(released_pair / name / "model.safetensors")
        exported = load_file(out / "export" / name / "model.safetensors")
        loaded.pop("generator_lm_head.weight", None)  # tied to the word embeddings; neither side needs it stored
        assert loaded.keys() == exported.keys(), name
        assert all(torch.equal(loaded[k], exported[k]) for k in loaded), name


def test_first_step_losses_equal_transformers_on_the_same_masked_batch(corpus, released_pair):
    tokenizer = load_tokenizer(released_pair / "discriminator")
    config = ModelConfig(
        init_discriminator=str(released_pair / "discriminator"), init_generator=str(released_pair / "generator")
    )
    electra = build_electra(config, tokenizer).eval()
    hf_disc = transformers.ElectraForPreTraining.from_pretrained(released_pair / "discriminator").eval()
    hf_gen = transformers.ElectraForMaskedLM.from_pretrained(released_pair / "generator").eval()
    encoding = tokenizer.encode_batch([p.read_text()[:300] for p in sorted(corpus.glob("*.txt"))])
    length = min(len(e.ids) for e in encoding)
    ids = torch.tensor([e.ids[:length] for e in encoding])
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        out = electra(ids, mask, types)
        logits = hf_gen(input_ids=out.masked.input_ids, attention_mask=mask, token_type_ids=types).logits
        slots = logits.gather(1, out.masked.positions[..., None].expand(-1, -1, logits.shape[-1]))
        weights = out.masked.weights.float()
        mlm = (
            F.cross_entropy(slots.flatten(0, 1), out.masked.labels.flatten(), reduction="none") * weights.flatten()
        ).sum() / weights.sum()
        corrupted = ids.scatter(
            1, out.masked.positions, torch.where(out.masked.weights, out.sampled, out.masked.labels)
        )
        disc_logits = hf_disc(input_ids=corrupted, attention_mask=mask, token_type_ids=types).logits
        rtd = F.binary_cross_entropy_with_logits(disc_logits, (corrupted != ids).float())
    assert out.mlm_loss.item() == pytest.approx(mlm.item(), abs=1e-5)
    assert out.rtd_loss.item() == pytest.approx(rtd.item(), abs=1e-6)


def test_a_discriminator_alone_gets_a_fresh_generator_sharing_its_embeddings(released_pair):
    tokenizer = load_tokenizer(released_pair / "discriminator")
    electra = build_electra(
        ModelConfig(init_discriminator=str(released_pair / "discriminator"), generator_hidden_fraction=0.5), tokenizer
    )
    assert electra.generator.config.hidden_size == 32 and electra.discriminator.config.hidden_size == 64
    loaded = load_file(released_pair / "discriminator" / "model.safetensors")
    assert torch.equal(
        electra.generator.electra.embeddings.word_embeddings.weight, loaded["electra.embeddings.word_embeddings.weight"]
    )
    assert electra.generator.electra.embeddings is electra.discriminator.electra.embeddings


def test_refusals_vocabulary_mismatch_and_pickles_that_are_not_plain_tensors(corpus, released_pair, tmp_path):
    from electra_pretrain.tokenizer import train_tokenizer

    other = train_tokenizer([(corpus / "part0.txt").read_text()], vocab_size=200, lowercase=False, show_progress=False)
    expected = load_tokenizer(released_pair / "discriminator").get_vocab_size()
    assert other.get_vocab_size() != expected
    with pytest.raises(ValueError, match=rf"config.json: vocab_size={expected}, but the tokenizer has \d+ tokens"):
        build_electra(ModelConfig(init_discriminator=str(released_pair / "discriminator")), other)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((released_pair / "discriminator" / "config.json").read_text())
    torch.save(
        {"weights": load_file(released_pair / "discriminator" / "model.safetensors"), "code": print},
        pickled / "pytorch_model.bin",
    )
    with pytest.raises(ValueError, match=r"pytorch_model.bin: refused by torch.load\(weights_only=True\)"):
        build_electra(ModelConfig(init_discriminator=str(pickled)), load_tokenizer(corpus.parent / "tokenizer"))
    # A plain state dict in a pickle loads.
    torch.save(load_file(released_pair / "discriminator" / "model.safetensors"), pickled / "pytorch_model.bin")
    electra = build_electra(ModelConfig(init_discriminator=str(pickled)), load_tokenizer(corpus.parent / "tokenizer"))
    assert electra.discriminator.config.hidden_size == 64
