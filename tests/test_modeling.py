"""Parity with transformers both ways, and clear errors on mismatched checkpoints."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from electra_pretrain.model_config import ElectraConfig, generator_config, preset_config
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator

# embedding_size < hidden_size (has embeddings_project) and embedding_size == hidden_size
CONFIGS = {
    "factorised": dict(
        vocab_size=101,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    ),
    "square": dict(
        vocab_size=101,
        embedding_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
    ),
}
MODELS = {
    "discriminator": (ElectraDiscriminator, transformers.ElectraForPreTraining),
    "generator": (ElectraGenerator, transformers.ElectraForMaskedLM),
}


def padded_two_segment_batch(vocab_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, vocab_size, (3, 24), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 17:] = 0
    attention_mask[2, 9:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 12:] = 1
    token_type_ids[attention_mask == 0] = 0
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def hf_logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def max_abs_diff(ours, theirs, batch):
    real = batch["attention_mask"].bool()  # padding positions carry no meaning on either side
    return (ours[real] - theirs[real]).abs().max().item()


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_ours_load_in_transformers_with_equal_logits(tmp_path, config_name, kind, attn):
    ours_cls, hf_cls = MODELS[kind]
    ours = ours_cls(ElectraConfig(**CONFIGS[config_name]), attn_implementation=attn).eval()
    ours.save_pretrained(tmp_path)
    hf, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    batch = padded_two_segment_batch(ours.config.vocab_size)
    with torch.no_grad():
        diff = max_abs_diff(ours(**batch), hf_logits(hf.eval(), batch), batch)
    print(f"ours->transformers {kind} {config_name} {attn}: max abs logit diff {diff:.2e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("kind", MODELS)
def test_transformers_checkpoints_load_here_with_equal_logits(tmp_path, config_name, kind):
    ours_cls, hf_cls = MODELS[kind]
    hf = hf_cls(transformers.ElectraConfig(**CONFIGS[config_name])).eval()
    with torch.no_grad():  # HF zero-initialises biases; random ones make the comparison stricter
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    hf.save_pretrained(tmp_path)
    ours = ours_cls.from_pretrained(tmp_path).eval()
    batch = padded_two_segment_batch(ours.config.vocab_size)
    with torch.no_grad():
        diff = max_abs_diff(ours(**batch), hf_logits(hf, batch), batch)
    print(f"transformers->ours {kind} {config_name}: max abs logit diff {diff:.2e}")
    assert diff <= 1e-4


def test_generator_logits_at_positions_match_full_logits():
    gen = ElectraGenerator(ElectraConfig(**CONFIGS["factorised"])).eval()
    batch = padded_two_segment_batch(gen.config.vocab_size)
    with torch.no_grad():
        full = gen(**batch)  # (B, L, V)
        mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        mask[0, 3] = mask[1, 5] = mask[2, 1] = True
        at_mask = gen(**batch, positions=mask)  # (N, V)
        index = torch.tensor([[3, 4], [5, 0], [1, 2]])
        at_index = gen(**batch, positions=index)  # (B, P, V)
    assert full.shape == (3, 24, 101) and at_mask.shape == (3, 101) and at_index.shape == (3, 2, 101)
    torch.testing.assert_close(at_mask, full[mask])
    torch.testing.assert_close(at_index, full.gather(1, index[..., None].expand(-1, -1, 101)))


def test_generator_output_layer_is_the_word_embedding_table():
    gen = ElectraGenerator(ElectraConfig(**CONFIGS["factorised"]))
    with torch.no_grad():
        gen.electra.embeddings.word_embeddings.weight[7].zero_()
        logits = gen(torch.tensor([[2, 8, 9, 3]]))
    torch.testing.assert_close(logits[..., 7], gen.generator_lm_head.bias[7].expand(1, 4))


def test_generator_config_follows_reference_recipe():
    small = generator_config(preset_config("small"), 0.25)
    assert (small.hidden_size, small.intermediate_size, small.num_attention_heads) == (64, 256, 1)
    assert (small.num_hidden_layers, small.embedding_size) == (12, 128)
    base = generator_config(preset_config("base"), 1 / 3)
    assert (base.hidden_size, base.intermediate_size, base.num_attention_heads) == (256, 1024, 4)


def test_config_json_has_transformers_fields(tmp_path):
    ElectraDiscriminator(ElectraConfig(**CONFIGS["square"])).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "electra" and raw["architectures"] == ["ElectraForPreTraining"]
    assert raw["layer_norm_eps"] == 1e-12 and raw["embedding_size"] == 32
    assert transformers.AutoConfig.from_pretrained(tmp_path).hidden_size == 32


def test_config_that_does_not_match_weights_is_named(tmp_path):
    ElectraDiscriminator(ElectraConfig(**CONFIGS["factorised"])).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"intermediate.dense.weight: checkpoint \(64, 32\) vs config \(48, 32\)"):
        ElectraDiscriminator.from_pretrained(tmp_path)


def test_vocab_size_mismatch_is_named(tmp_path):
    ElectraGenerator(ElectraConfig(**CONFIGS["factorised"])).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["vocab_size"] = 120
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"word_embeddings.weight: checkpoint \(101, 16\) vs config \(120, 16\)"):
        ElectraGenerator.from_pretrained(tmp_path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    ElectraDiscriminator(ElectraConfig(**CONFIGS["factorised"])).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["discriminator_predictions.dense.bias"]
    weights["electra.pooler.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"missing keys: \['discriminator_predictions.dense.bias'\].*"
        r"unexpected keys: \['electra.pooler.weight'\]",
    ):
        ElectraDiscriminator.from_pretrained(tmp_path)


def test_generator_loaded_as_discriminator_is_refused(tmp_path):
    ElectraGenerator(ElectraConfig(**CONFIGS["factorised"])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds ElectraForMaskedLM weights .*not ElectraForPreTraining"):
        ElectraDiscriminator.from_pretrained(tmp_path)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_attention_heads=4"):
        ElectraConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        preset_config("huge")
