"""Masking, sampling, embedding sharing and the joint loss."""

import pytest
import torch

from electra_pretrain.model_config import ElectraConfig, generator_config
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.objective import (
    DisentangledEmbeddings,
    Electra,
    gumbel_sample,
    mask_tokens,
    max_predictions_for,
)

from .helpers import corpora as fixtures

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = torch.tensor([PAD, CLS, SEP, MASK])
VOCAB = 50


def tiny_config(**overrides) -> ElectraConfig:
    return fixtures.tiny_config(**{**dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64), **overrides})


def tiny_electra(sharing="tied", dropout=0.1, **kwargs) -> Electra:
    disc = tiny_config(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return Electra(
        ElectraGenerator(generator_config(disc, 0.5)),
        ElectraDiscriminator(disc),
        mask_token_id=MASK,
        special_token_ids=[PAD, CLS, SEP, MASK],
        embedding_sharing=sharing,
        **kwargs,
    )


def random_batch(batch=16, seq_len=32, pad_from=None):
    ids = torch.randint(5, VOCAB, (batch, seq_len))
    ids[:, 0], ids[:, seq_len // 2] = CLS, SEP
    ids[:, -1] = SEP
    mask = torch.ones_like(ids)
    if pad_from is not None:
        mask[::2, pad_from:] = 0
        ids[::2, pad_from:] = PAD
        ids[::2, pad_from - 1] = SEP
    return ids, mask


def test_max_predictions_matches_reference():
    assert max_predictions_for(128, 0.15) == 19 and max_predictions_for(512, 0.15) == 79
    assert max_predictions_for(512, 0.25) == 130


def test_masking_rates_over_many_draws():
    ids, mask = random_batch(batch=4000, seq_len=64, pad_from=40)
    out = mask_tokens(
        ids,
        mask,
        SPECIALS,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        mask_prob=0.15,
        max_predictions=max_predictions_for(64, 0.15),
        random_token_share=0.1,
    )
    maskable = (mask.bool() & ~torch.isin(ids, SPECIALS)).sum(1)
    chosen = out.weights.sum(1)
    torch.testing.assert_close(chosen, (maskable * 0.15).round().long().clamp(1, 9))
    got = out.input_ids.gather(1, out.positions)[out.weights]
    labels = out.labels[out.weights]
    share_mask = (got == MASK).float().mean().item()
    share_kept = (got == labels).float().mean().item()
    assert abs(share_mask - 0.85) < 0.01
    # random tokens land on the original 1 time in VOCAB
    assert abs(share_kept - (0.05 + 0.1 / VOCAB)) < 0.01
    # nothing outside the chosen positions changed
    changed = out.input_ids != ids
    chosen_map = torch.zeros_like(changed).scatter(1, out.positions, out.weights)
    assert not (changed & ~chosen_map).any()


def test_specials_and_padding_are_never_masked():
    ids, mask = random_batch(batch=2000, seq_len=24, pad_from=10)
    out = mask_tokens(ids, mask, SPECIALS, mask_token_id=MASK, vocab_size=VOCAB, mask_prob=0.5, max_predictions=12)
    hit = out.positions[out.weights]
    rows = torch.arange(ids.shape[0])[:, None].expand_as(out.positions)[out.weights]
    assert not torch.isin(ids[rows, hit], SPECIALS).any()
    assert mask[rows, hit].all()


def test_hand_built_labels():
    ids = torch.tensor([[CLS, 10, 11, SEP, 12, SEP, PAD, PAD], [CLS, 20, SEP, PAD, PAD, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    out = mask_tokens(ids, mask, SPECIALS, mask_token_id=MASK, vocab_size=VOCAB, mask_prob=0.99, max_predictions=4)
    assert out.weights.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert sorted(out.positions[0, :3].tolist()) == [1, 2, 4] and out.positions[1, 0].item() == 1
    assert sorted(out.labels[0, :3].tolist()) == [10, 11, 12] and out.labels[1, 0].item() == 20
    # with mask share 1, exactly the chosen tokens become [MASK]
    out = mask_tokens(
        ids,
        mask,
        SPECIALS,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        mask_prob=0.99,
        max_predictions=4,
        mask_token_share=1.0,
    )
    assert out.input_ids.tolist() == [[CLS, MASK, MASK, SEP, MASK, SEP, PAD, PAD], [CLS, MASK, SEP] + [PAD] * 5]


def test_row_without_maskable_tokens_gets_no_prediction():
    ids = torch.tensor([[CLS, SEP, PAD, PAD], [CLS, 9, SEP, PAD]])
    out = mask_tokens(
        ids, (ids != PAD).long(), SPECIALS, mask_token_id=MASK, vocab_size=VOCAB, mask_prob=0.15, max_predictions=2
    )
    assert out.weights.tolist() == [[False, False], [True, False]]
    assert out.input_ids[0].tolist() == ids[0].tolist()


def test_gumbel_sampling_follows_softmax_and_has_no_grad():
    logits = torch.tensor([0.0, 1.0, 2.0], requires_grad=True).expand(20000, 3)
    samples = gumbel_sample(logits.half())
    assert not samples.requires_grad and samples.dtype == torch.long
    freq = torch.bincount(samples, minlength=3).float() / samples.numel()
    torch.testing.assert_close(freq, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=0.015, rtol=0)
    cold = gumbel_sample(torch.tensor([[0.0, 1.0, 2.0]]).expand(2000, 3), temperature=0.05)
    assert (cold == 2).all()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_gumbel_frequencies_pass_a_chi_square_test(temperature):
    """(B, P, V) logits with a wide range and a never-possible entry; frequencies vs softmax(logits / T)."""
    torch.manual_seed(0)
    logits = torch.tensor([3.0, 2.5, 0.0, -1.0, -4.0, 1.0, -1e4, 2.0])
    samples = gumbel_sample(logits.expand(50, 2000, 8), temperature)  # 100k draws
    assert samples.shape == (50, 2000)
    counts = torch.bincount(samples.flatten(), minlength=8).double()
    assert counts[6] == 0
    expected = torch.softmax(logits.double() / temperature, 0) * samples.numel()
    keep = expected > 0
    chi_square = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    assert chi_square < 24.1  # the 0.9995 quantile of chi-square with 6 degrees of freedom


def test_loss_is_weighted_sum_and_metrics_are_device_tensors():
    model = tiny_electra(gen_weight=1.0, disc_weight=50.0)
    ids, mask = random_batch(pad_from=20)
    out = model(ids, mask)
    torch.testing.assert_close(out.loss, out.mlm_loss + 50.0 * out.rtd_loss)
    # untrained: MLM near log(V), RTD near log(2) or below
    assert abs(out.mlm_loss.item() - torch.log(torch.tensor(float(VOCAB))).item()) < 0.5
    for name in ("gen_accuracy", "disc_accuracy", "replaced_fraction", "disc_precision", "disc_recall"):
        value = out.metrics[name]
        assert value.ndim == 0 and not value.requires_grad and 0.0 <= value.item() <= 1.0, name
    assert out.metrics["tokens"].item() == mask.sum().item()


def test_tied_sharing_uses_one_set_of_parameters_reached_by_both_losses():
    model = tiny_electra("tied")
    gen_emb, disc_emb = model.generator.electra.embeddings, model.discriminator.electra.embeddings
    assert gen_emb.word_embeddings.weight is disc_emb.word_embeddings.weight
    assert gen_emb.position_embeddings.weight is disc_emb.position_embeddings.weight
    assert gen_emb.token_type_embeddings.weight is disc_emb.token_type_embeddings.weight
    assert gen_emb.LayerNorm.weight is disc_emb.LayerNorm.weight
    assert model.generator.electra.embeddings_project is not model.discriminator.electra.embeddings_project
    ids, mask = random_batch()
    for loss_name in ("mlm_loss", "rtd_loss"):
        model.zero_grad()
        getattr(model(ids, mask), loss_name).backward()
        assert gen_emb.word_embeddings.weight.grad.abs().sum() > 0, loss_name
    # the output layer still reads the shared table
    with torch.no_grad():
        gen_emb.word_embeddings.weight[9].zero_()
    model.generator.eval()
    logits = model.generator(ids[:1])
    torch.testing.assert_close(logits[..., 9], model.generator.generator_lm_head.bias[9].expand_as(logits[..., 9]))


def test_gdes_only_mlm_reaches_the_shared_table():
    model = tiny_electra("gdes")
    disc_emb = model.discriminator.electra.embeddings
    shared = model.generator.electra.embeddings.word_embeddings.weight
    assert isinstance(disc_emb, DisentangledEmbeddings) and (disc_emb.word_delta == 0).all()
    ids, mask = random_batch()
    model.zero_grad()
    model(ids, mask).rtd_loss.backward()
    assert shared.grad is None or shared.grad.abs().sum() == 0
    assert disc_emb.word_delta.grad.abs().sum() > 0
    model.zero_grad()
    model(ids, mask).mlm_loss.backward()
    assert shared.grad.abs().sum() > 0
    # parameters are counted once: the shared table is the generator's
    assert sum(p is shared for p in model.parameters()) == 1


def test_none_sharing_keeps_separate_tables():
    model = tiny_electra("none")
    assert (
        model.generator.electra.embeddings.word_embeddings.weight
        is not model.discriminator.electra.embeddings.word_embeddings.weight
    )


def test_sharing_needs_equal_embedding_shapes():
    with pytest.raises(ValueError, match="needs equal embedding_size: generator 12 vs discriminator 8"):
        Electra(
            ElectraGenerator(tiny_config(embedding_size=12)),
            ElectraDiscriminator(tiny_config()),
            mask_token_id=MASK,
            special_token_ids=[PAD],
        )


def test_sampled_tokens_carry_no_gradient_into_the_generator_from_rtd():
    model = tiny_electra("none")
    ids, mask = random_batch()
    model(ids, mask).rtd_loss.backward()
    assert all(p.grad is None for p in model.generator.parameters())


def mean_losses(model: Electra, ids, mask, draws: int = 20) -> tuple[float, float]:
    """MLM and RTD loss averaged over many random maskings of the same batch."""
    with torch.no_grad():
        outs = [model(ids, mask) for _ in range(draws)]
    return sum(o.mlm_loss.item() for o in outs) / draws, sum(o.rtd_loss.item() for o in outs) / draws


def overfit(sharing: str, seed: int, steps: int = 300) -> tuple[float, float, float, float]:
    """(MLM start, MLM end, RTD start, RTD end) of a 2-layer model trained on one batch."""
    torch.manual_seed(seed)
    disc = tiny_config(
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_hidden_layers=2,
        embedding_size=32,
        hidden_size=64,
        intermediate_size=128,
    )
    model = Electra(
        ElectraGenerator(generator_config(disc, 0.5)),
        ElectraDiscriminator(disc),
        mask_token_id=MASK,
        special_token_ids=[PAD, CLS, SEP, MASK],
        embedding_sharing=sharing,
        mask_prob=0.25,
    )
    ids, mask = random_batch(batch=4, seq_len=16, pad_from=12)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    mlm_start, rtd_start = mean_losses(model, ids, mask)
    for _ in range(steps):
        optimizer.zero_grad()
        model(ids, mask).loss.backward()
        optimizer.step()
    mlm_end, rtd_end = mean_losses(model, ids, mask)
    return mlm_start, mlm_end, rtd_start, rtd_end


# One seed's run is chaotic: the last-bit differences between CPUs (AVX2 / AVX-512) or thread counts move a tied
# run's RTD reduction between 2.3x and 5x. So three seeds are pooled and the thresholds sit well below what any of
# them reached (measured over 1 and 2 threads, pooled: tied MLM 2.9-3.1x, RTD 2.8x; gdes MLM 43x, RTD 10-11x);
# a model that does not learn stays near 1x. Under `tied` the 50x RTD gradient also pulls on the shared table, so
# the generator memorises more slowly.
@pytest.mark.parametrize("sharing, mlm_factor, rtd_factor", [("tied", 1.8, 1.6), ("gdes", 10.0, 4.0)])
def test_tiny_model_overfits_one_batch(sharing, mlm_factor, rtd_factor):
    runs = [overfit(sharing, seed) for seed in (0, 1, 2)]
    mlm_start, mlm_end, rtd_start, rtd_end = (sum(values) / len(runs) for values in zip(*runs))
    assert mlm_start / mlm_end > mlm_factor, runs
    assert rtd_start / rtd_end > rtd_factor, runs


def test_original_masked_count_is_the_expected_distinct_count_of_draws_with_replacement():
    ids, mask = random_batch(batch=20000, seq_len=64)
    out = mask_tokens(
        ids,
        mask,
        SPECIALS,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        mask_prob=0.15,
        max_predictions=max_predictions_for(64, 0.15),
        masked_count="original",
    )
    # [CLS] and two [SEP] per row; GR draws min(max_predictions, round(0.15 x non-pad tokens)) = min(9, 10)
    maskable, draws = 64 - 3, min(max_predictions_for(64, 0.15), round(0.15 * 64))
    expected = maskable * (1 - (1 - 1 / maskable) ** draws)  # 8.43 distinct positions, against 9 for "distinct"
    assert out.weights.sum(1).double().mean().item() == pytest.approx(expected, abs=0.02)
    chosen = out.input_ids.gather(1, out.positions)[out.weights]
    assert not torch.isin(out.labels[out.weights], SPECIALS).any() and chosen.numel() > 0


def test_original_init_is_glorot_uniform_for_the_projection_and_the_rtd_output():
    from electra_pretrain.pretrain.build import original_init

    electra = tiny_electra()
    original_init(electra)
    for layer in (
        electra.discriminator.discriminator_predictions.dense_prediction,
        electra.discriminator.electra.embeddings_project,
    ):
        fan_out, fan_in = layer.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max().item() <= bound and layer.weight.abs().max().item() > 0.5 * bound
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    dense = electra.discriminator.discriminator_predictions.dense.weight  # untouched: truncated normal 0.02
    assert dense.abs().max().item() <= 0.04
