"""The masked-LM baseline (model.objective=mlm), compute accounting (flops in metrics.jsonl, trainer.max_flops),
and the representation figures that show a collapsing encoder."""

import json
import math

import pytest
import torch

from electra_pretrain.model_config import generator_config
from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.evaluate import Evaluator, held_out_batches
from electra_pretrain.pretrain.metrics import electra_train_flops_per_token, masked_lm_train_flops_per_token
from electra_pretrain.pretrain.objective import Electra, MaskedLM
from electra_pretrain.pretrain.representations import effective_rank, mean_cosine
from electra_pretrain.tokenizer import load_tokenizer

from .helpers.corpora import tiny_config
from .helpers.finetune_runs import finetune_in_process
from .helpers.runs import metrics, overrides, train
from .test_objective import CLS, MASK, PAD, SEP, random_batch

SPECIALS = [PAD, CLS, SEP, MASK]


def masked_lm(seed: int) -> MaskedLM:
    torch.manual_seed(seed)
    config = tiny_config(
        vocab_size=50,
        num_hidden_layers=2,
        embedding_size=32,
        hidden_size=64,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return MaskedLM(ElectraGenerator(config), mask_token_id=MASK, special_token_ids=SPECIALS, mask_prob=0.25)


def test_masked_lm_loss_is_the_cross_entropy_at_the_masked_slots_and_falls():
    ids, mask = random_batch(batch=4, seq_len=16, pad_from=12)
    starts, ends = [], []
    for seed in (0, 1, 2):
        model = masked_lm(seed)
        out = model(ids, mask)
        assert out.loss is out.mlm_loss and set(out.scalars()) >= set(MaskedLM.logged) | {"tokens"}
        assert not torch.isin(out.masked.labels[out.masked.weights], torch.tensor(SPECIALS)).any()
        # untrained: near ln(V)
        assert abs(out.mlm_loss.item() - math.log(50)) < 0.5
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        with torch.no_grad():
            starts.append(sum(model(ids, mask).mlm_loss.item() for _ in range(10)) / 10)
        for _ in range(150):
            optimizer.zero_grad()
            model(ids, mask).loss.backward()
            optimizer.step()
        with torch.no_grad():
            ends.append(sum(model(ids, mask).mlm_loss.item() for _ in range(10)) / 10)
    # pooled over three seeds; measured about 10x on one batch, a model that does not learn stays at 1x
    assert sum(starts) / sum(ends) > 3, (starts, ends)


def test_flops_per_token_count_both_models_or_the_one_encoder():
    disc = tiny_config(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2, embedding_size=32)
    gen = generator_config(disc, 0.5)
    rtd = electra_train_flops_per_token(gen, disc, 128, 19)
    mlm = masked_lm_train_flops_per_token(disc, 128, 19)
    per_layer = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 4 * 128 * 64
    encoder = 2 * per_layer + 2 * 32 * 64  # two layers and embeddings_project
    assert mlm == pytest.approx(3 * (encoder + 2 * (64 * 32 + 32 * 1000) * 19 / 128))
    assert rtd > mlm  # the discriminator is the same encoder, and the generator comes on top


@pytest.mark.slow
def test_an_mlm_run_counts_flops_stops_at_its_budget_and_exports_what_transformers_loads(corpus, tmp_path):
    from transformers import ElectraForMaskedLM, ElectraForSequenceClassification

    out = tmp_path / "mlm"
    # tiny at 64 tokens x 8 sequences: 0.2-0.3 GFLOP a step; a budget of 2e9 ends the run after a few steps
    result = train(overrides(corpus, out, "model.objective=mlm", "trainer.max_flops=2e9", "trainer.save_every=2"))
    assert "masked LM:" in result.stdout and "trainer.max_flops=2e+09" in result.stdout
    rows = metrics(out)
    per_step = rows[0]["flops"]
    steps = math.ceil(2e9 / per_step)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(r["flops"] == pytest.approx(r["step"] * per_step) for r in rows)
    assert rows[-1]["flops"] >= 2e9 > rows[-2]["flops"]
    assert {"loss", "mlm_loss", "mlm_accuracy"} <= rows[0].keys() and "rtd_loss" not in rows[0]

    folder = out / "export" / "mlm"
    ours = ElectraGenerator.from_pretrained(folder).eval()
    theirs, info = ElectraForMaskedLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values())
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(ids).logits, ours(ids), atol=1e-5, rtol=1e-4)
    _, info = ElectraForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert all(k.startswith("classifier.") for k in info["missing_keys"])
    assert all(k.startswith("generator_") for k in info["unexpected_keys"])
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["ElectraForMaskedLM"]

    from .helpers.corpora import write_classification_csv

    train_csv = write_classification_csv(tmp_path / "train.csv", 40, seed=1)
    results = finetune_in_process(
        [
            f"model_path={out / 'export'}",
            f"task.train_files=[{train_csv}]",
            f"task.validation_files=[{train_csv}]",
            "trainer.epochs=1",
            f"output_dir={tmp_path / 'tuned'}",
        ]
    )
    assert results["model_path"] == str(out / "export") and 0 <= results["validation"]["accuracy"] <= 1


@pytest.mark.slow
def test_an_rtd_run_under_a_budget_logs_flops_and_plots_against_them(corpus, tmp_path):
    from .test_evaluate import cli

    out = tmp_path / "rtd"
    train(overrides(corpus, out, "trainer.max_flops=2e9"))
    rows = metrics(out)
    assert rows[-1]["flops"] >= 2e9 > rows[-2]["flops"]
    assert rows[0]["flops"] > 0 and "rtd_loss" in rows[0]
    target = tmp_path / "flops.png"
    cli("plot", str(out), "--out", str(target), "--x", "flops")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_effective_rank_and_mean_cosine_on_known_matrices():
    torch.manual_seed(0)
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0)
    line = torch.randn(100, 1) @ torch.randn(1, 16)  # every state on one line
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-4)  # float32 rounding leaves tiny singular values
    assert mean_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    assert mean_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
    assert abs(mean_cosine(torch.randn(2000, 64))) < 0.01


def test_held_out_evaluation_tells_a_collapsed_encoder_from_a_healthy_one(corpus):
    from accelerate import Accelerator

    tokenizer = load_tokenizer(corpus.parent / "tokenizer")
    batches = held_out_batches([(corpus / "part0.txt").read_text()], tokenizer, 64, 2048)
    evaluator = Evaluator(batches, tokenizer, Accelerator(cpu=True))
    torch.manual_seed(0)
    config = tiny_config(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128)
    healthy = ElectraDiscriminator(config)
    collapsed = ElectraDiscriminator(config)
    with torch.no_grad():  # every token state becomes the same vector, as in a collapsed encoder
        last = collapsed.electra.encoder.layer[-1].output.LayerNorm
        last.weight.zero_()
        last.bias.copy_(torch.randn(64))
    good, bad = evaluator(discriminator=healthy), evaluator(discriminator=collapsed)
    assert good["effective_rank"] > 4 and good["mean_cosine"] < 0.5, good  # measured 6.9, 0.19 (few distinct words)
    assert bad["effective_rank"] < 1.5 and bad["mean_cosine"] > 0.99, bad
    # the same figures for an RTD module's discriminator and for a masked LM's encoder
    electra = Electra(
        ElectraGenerator(generator_config(config, 0.5)),
        healthy,
        mask_token_id=MASK,
        special_token_ids=SPECIALS,
        embedding_sharing="none",  # tied sharing would give the discriminator the generator's tables
    )
    assert evaluator(electra)["effective_rank"] == pytest.approx(good["effective_rank"])
    mlm = MaskedLM(ElectraGenerator(config), mask_token_id=MASK, special_token_ids=SPECIALS)
    scores = evaluator(mlm)
    assert {"mlm_loss", "mlm_accuracy", "effective_rank", "mean_cosine"} == set(scores)
