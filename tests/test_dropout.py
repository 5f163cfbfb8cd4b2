"""The packed-bits dropout: its statistics, gradient, seeding and where the models use it."""

import pytest
import torch
import torch.nn.functional as F

from electra_pretrain.dropout import Dropout, dropout, packed_dropout, set_dropout_implementation
from electra_pretrain.modeling import ElectraDiscriminator

from .helpers.corpora import tiny_config


def test_drop_rate_and_scale():
    torch.manual_seed(0)
    x = torch.ones(1_000_001)  # odd: the last 64-bit draw is only half used
    y = packed_dropout(x, 0.1)
    dropped = (y == 0).double().mean().item()
    assert dropped == pytest.approx(0.1, abs=5 * (0.1 * 0.9 / x.numel()) ** 0.5)
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))


def test_two_lanes_of_one_draw_are_independent():
    torch.manual_seed(0)
    y = packed_dropout(torch.ones(2_000_000), 0.3).view(-1, 2)  # each row: both int32 lanes of one draw
    both = ((y[:, 0] == 0) & (y[:, 1] == 0)).double().mean().item()
    assert both == pytest.approx(0.09, abs=5 * (0.09 * 0.91 / y.shape[0]) ** 0.5)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 33, requires_grad=True)
    y = packed_dropout(x, 0.25)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.equal(x.grad, kept.float() / 0.75)
    torch.testing.assert_close(y.detach()[kept], x.detach()[kept] / 0.75)


def test_mask_follows_the_torch_seed_and_keeps_shape_and_dtype():
    x = torch.ones(4, 7, 9, dtype=torch.bfloat16)
    torch.manual_seed(1)
    first = packed_dropout(x, 0.5)
    torch.manual_seed(1)
    assert torch.equal(first, packed_dropout(x, 0.5))
    assert not torch.equal(first, packed_dropout(x, 0.5))
    assert first.shape == x.shape and first.dtype == torch.bfloat16


def test_identity_when_not_training_or_p_is_zero():
    x = torch.randn(10, 10)
    assert dropout(x, 0.1, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    with pytest.raises(ValueError, match="dropout probability"):
        packed_dropout(x, 1.0)


@pytest.mark.slow
def test_implementation_choice_reaches_every_dropout_module():
    model = ElectraDiscriminator(tiny_config(num_hidden_layers=2))
    modules = [m for m in model.modules() if isinstance(m, Dropout)]
    assert len(modules) == 1 + 2 * 3  # embeddings; per layer: attention probabilities, two residual outputs
    set_dropout_implementation(model, "torch")
    assert {m.implementation for m in modules} == {"torch"}
    torch.manual_seed(3)
    expected = F.dropout(torch.ones(5, 6), 0.1, training=True)
    torch.manual_seed(3)
    assert torch.equal(modules[0].train()(torch.ones(5, 6)), expected)
    with pytest.raises(ValueError, match="'fast'"):
        set_dropout_implementation(model, "fast")


@pytest.mark.slow
def test_training_attention_on_cpu_is_the_same_math_for_sdpa_and_eager():
    """With dropout on CPU, the sdpa model runs the written-out math path with the packed mask, as eager does."""
    config = tiny_config(num_hidden_layers=2, attention_probs_dropout_prob=0.5)
    torch.manual_seed(0)
    sdpa = ElectraDiscriminator(config, "sdpa").train()
    eager = ElectraDiscriminator(config, "eager").train()
    eager.load_state_dict(sdpa.state_dict())
    ids = torch.randint(5, 40, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    torch.manual_seed(5)
    out_sdpa = sdpa(ids, mask)
    torch.manual_seed(5)
    torch.testing.assert_close(eager(ids, mask), out_sdpa, rtol=0, atol=1e-6)
    torch.manual_seed(6)
    assert not torch.allclose(eager(ids, mask), out_sdpa)


def test_config_names_a_bad_dropout_implementation():
    from electra_pretrain.pretrain.config import ModelConfig

    with pytest.raises(ValueError, match="model.dropout_implementation='fast'"):
        ModelConfig(dropout_implementation="fast")
