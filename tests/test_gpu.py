"""GPU-only paths: mixed precision, SDPA kernels, dropout, the bench variants. Skipped without CUDA."""

import pytest
import torch

from electra_pretrain.model_config import generator_config
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.objective import Electra

from .helpers.corpora import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CONFIG = tiny_config(
    vocab_size=1000,
    embedding_size=64,
    hidden_size=128,
    num_hidden_layers=2,
    intermediate_size=512,
    max_position_embeddings=128,
)


def batch(device="cuda"):
    ids = torch.randint(5, 1000, (8, 128), device=device)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[::2, 100:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_sdpa_matches_eager_on_gpu():
    ours = ElectraDiscriminator(CONFIG).cuda().eval()
    eager = ElectraDiscriminator(CONFIG, attn_implementation="eager").cuda().eval()
    eager.load_state_dict(ours.state_dict())
    b = batch()
    with torch.no_grad():
        real = b["attention_mask"].bool()
        assert (ours(**b)[real] - eager(**b)[real]).abs().max().item() < 1e-4


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_are_finite_and_learn(precision):
    from accelerate import Accelerator

    from electra_pretrain.pretrain.step import LossSpikeGuard, SkipCounts, train_step

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    accelerator = Accelerator(mixed_precision=precision)
    model = Electra(
        ElectraGenerator(generator_config(CONFIG, 0.5)),
        ElectraDiscriminator(CONFIG),
        mask_token_id=4,
        special_token_ids=[0, 2, 3, 4],
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    b = batch()
    losses = []
    guard, skips = LossSpikeGuard(10.0, accelerator.device), SkipCounts(accelerator.device)
    for _ in range(30):
        result = train_step(model, [b], optimizer, scheduler, accelerator, 1.0, guard, skips)
        losses.append(result.metrics["loss"].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_dropout_on_gpu_auto_is_torch_and_packed_has_the_right_rate():
    from electra_pretrain.dropout import dropout, packed_dropout

    x = torch.ones(1_000_001, device="cuda")
    torch.manual_seed(0)
    auto = dropout(x, 0.1, training=True)
    torch.manual_seed(0)
    assert torch.equal(auto, torch.nn.functional.dropout(x, 0.1, training=True))
    packed = packed_dropout(x, 0.1)
    assert packed.device.type == "cuda"
    assert (packed == 0).double().mean().item() == pytest.approx(0.1, abs=0.0015)


def test_ablation_variants_step_on_gpu():
    from electra_pretrain.tools.bench import ablation_variants, run_worker

    for _, variant in ablation_variants("cuda"):
        if not variant.compile:
            result = run_worker(variant, "tiny", seq_len=32, batch_size=4, device_name="cuda", steps=1, warmup=1)
            assert result["peak_mem_bytes"] > 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fine_tuning_in_mixed_precision_learns_on_gpu(tiny_export, tmp_path, precision):
    from .helpers.corpora import write_classification_csv
    from .helpers.finetune_runs import finetune_in_process

    train = write_classification_csv(tmp_path / "train.csv", 240, seed=1)
    valid = write_classification_csv(tmp_path / "valid.csv", 61, seed=2)
    results = finetune_in_process(
        [
            f"model_path={tiny_export}",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{valid}]",
            "trainer.epochs=6",
            "trainer.batch_size=16",
            "optim.lr=3e-3",
            "optim.layerwise_lr_decay=1.0",
            f"trainer.mixed_precision={precision}",
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    assert results["validation"]["accuracy"] >= 0.9
