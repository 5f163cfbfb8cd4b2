"""Held-out evaluation, the evaluate / plot / detect commands, and the warmup rule."""

import json
import subprocess
import sys

import pytest
import torch

from electra_pretrain.pretrain.config import OptimConfig, SourceSpec
from electra_pretrain.pretrain.evaluate import Evaluator, held_out_batches, roc_auc
from electra_pretrain.pretrain.sources import documents, is_held_out
from electra_pretrain.tokenizer import load_tokenizer

from .helpers.runs import ENV, TORCHRUN, metrics, overrides, train

CLI = (sys.executable, "-m", "electra_pretrain")


def cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_roc_auc_is_the_share_of_correctly_ordered_pairs_ties_counting_half():
    torch.manual_seed(0)
    scores = torch.randint(0, 6, (300,)).float()  # many ties
    labels = torch.rand(300) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert roc_auc(scores, labels) == pytest.approx(pairs.mean().item(), abs=1e-12)
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 1.0
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([True, True])) != roc_auc(
        torch.tensor([0.1]), torch.tensor([True])
    )


def test_held_out_share_is_decided_by_the_text_and_never_overlaps_training(corpus):
    spec = [SourceSpec(files=[str(corpus / "*.txt")])]
    train_docs = {r["text"] for r in documents(spec, seed=0, held_out_share=0.2)}
    held_docs = {r["text"] for r in documents(spec, seed=3, held_out_share=0.2, held_out=True)}
    every_doc = {r["text"] for r in documents(spec, seed=0)}
    assert train_docs and held_docs and not train_docs & held_docs and train_docs | held_docs == every_doc
    assert all(is_held_out(text, 0.2) for text in held_docs)


@pytest.fixture(scope="module")
def evaluated_run(corpus, tmp_path_factory):
    """A run that holds out part0.txt for evaluation every 3 steps."""
    root = tmp_path_factory.mktemp("eval")
    data = root / "train"
    data.mkdir()
    (data / "part1.txt").write_text((corpus / "part1.txt").read_text())
    out = root / "run"
    args = [
        *[a for a in overrides(corpus, out, "trainer.max_steps=6") if not a.startswith("data.files")],
        f"data.files=[{data}/*.txt]",
        f"data.eval_files=[{corpus}/part0.txt]",
        "trainer.eval_every=3",
        "trainer.eval_tokens=4000",
    ]
    train(args)
    return out, args


@pytest.mark.slow
def test_training_logs_held_out_metrics_that_evaluate_reproduces(corpus, evaluated_run):
    out, _ = evaluated_run
    rows = [r for r in metrics(out) if "eval/disc_auc" in r]
    assert [r["step"] for r in rows] == [3, 6]
    keys = {
        "mlm_loss",
        "mlm_accuracy",
        "sampled_accuracy",
        "rtd_loss",
        "disc_auc",
        "disc_accuracy",
        "disc_precision",
        "disc_recall",
        "random_replacement_auc",
    }
    assert {f"eval/{k}" for k in keys} <= rows[-1].keys()
    assert all("time" in r and "elapsed_s" in r for r in metrics(out))
    # The same weights on the same data: the same numbers, from the checkpoint and from the export.
    for path in (out / "checkpoints" / "step_6", out / "export"):
        result = json.loads(cli("evaluate", str(path), "--data", str(corpus / "part0.txt"), "--json").stdout)
        assert {k: result[k] for k in keys} == {k: rows[-1][f"eval/{k}"] for k in keys}
    alone = json.loads(
        cli(
            "evaluate",
            str(out / "export" / "discriminator"),
            "--data",
            str(corpus / "part0.txt"),
            "--max-tokens",
            "4000",
            "--seq-len",
            "64",
            "--json",
        ).stdout
    )
    assert alone.keys() == {"random_replacement_auc", "effective_rank", "mean_cosine", "tokens"}
    assert alone["random_replacement_auc"] == rows[-1]["eval/random_replacement_auc"]


@pytest.mark.slow
def test_evaluation_is_deterministic_and_leaves_training_randomness_alone(corpus, evaluated_run):
    from accelerate import Accelerator

    from electra_pretrain.pretrain.evaluate import load_target

    out, _ = evaluated_run
    target = load_target(out / "checkpoints" / "step_6")
    batches = held_out_batches((p.read_text() for p in [corpus / "part0.txt"]), target.tokenizer, 64, 3000)
    evaluator = Evaluator(batches, target.tokenizer, Accelerator(cpu=True))
    torch.manual_seed(11)
    state = torch.get_rng_state()
    first = evaluator(target.model)
    assert torch.equal(torch.get_rng_state(), state)
    assert evaluator(target.model) == first
    assert target.model.training  # modes restored


@pytest.mark.slow
def test_two_processes_compute_auc_over_all_tokens(corpus, evaluated_run, tmp_path):
    _, args = evaluated_run
    out = tmp_path / "ddp"
    args = [*[a for a in args if not a.startswith("output_dir")], f"output_dir={out}"]
    train(args, launcher=(*TORCHRUN, "--master_port", "29561"), env={"ACCELERATE_USE_CPU": "1"})
    logged = [r for r in metrics(out) if "eval/disc_auc" in r][-1]
    # One process evaluating the same checkpoint sees every batch, corrupted the same way.
    single = json.loads(
        cli("evaluate", str(out / "checkpoints" / "step_6"), "--data", str(corpus / "part0.txt"), "--json").stdout
    )
    for key in ("disc_auc", "random_replacement_auc"):
        assert logged[f"eval/{key}"] == pytest.approx(single[key], abs=1e-9), key
    assert logged["eval/mlm_loss"] == pytest.approx(single["mlm_loss"], rel=1e-6)


def test_warmup_longer_than_half_the_run_is_scaled_down_with_a_notice():
    steps, notice = OptimConfig(warmup_steps=10_000).warmup_for(200)
    assert steps == 20 and "optim.warmup_steps=10000 is over half of trainer.max_steps=200" in notice
    assert OptimConfig(warmup_steps=10_000).warmup_for(1_000_000) == (10_000, None)
    assert OptimConfig(warmup_steps=10_000, warmup_share=0.05).warmup_for(200) == (10, None)
    assert OptimConfig(warmup_steps=10_000).warmup_for(1)[0] == 1  # a one-step smoke run still works


@pytest.mark.slow
def test_readme_style_short_run_learns(corpus, tmp_path):
    """The default warmup (10k steps) with a 30-step run: scaled down, so the loss falls."""
    out = tmp_path / "short"
    args = [a for a in overrides(corpus, out, "trainer.max_steps=30") if not a.startswith("optim.warmup_steps")]
    result = train(args)
    assert "warming up for 3 steps" in result.stdout
    rows = [r for r in metrics(out) if "loss" in r]
    assert rows[-1]["mlm_loss"] < rows[0]["mlm_loss"] - 0.1 and rows[-1]["loss"] < rows[0]["loss"]


@pytest.mark.slow
def test_plot_writes_a_png_of_several_runs(evaluated_run, tmp_path):
    out, _ = evaluated_run
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = tmp_path / "both.png"
    cli("plot", str(out), str(out), "--out", str(target), "--x", "tokens")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 20_000


@pytest.mark.slow
def test_detect_prints_json_and_marks_tokens_over_the_threshold(evaluated_run):
    out, _ = evaluated_run
    folder = str(out / "export" / "discriminator")
    rows = json.loads(cli("detect", folder, "the quick brown fox", "--json").stdout)
    tokens = load_tokenizer(folder).encode("the quick brown fox", add_special_tokens=False).tokens
    assert [r["token"] for r in rows] == tokens and all(0 <= r["probability"] <= 1 for r in rows)
    marked = cli("detect", folder, "the quick brown fox", "--threshold", "0").stdout.splitlines()
    assert all(line.endswith("<- replaced?") for line in marked)
    assert not any(
        "replaced?" in line
        for line in cli("detect", folder, "the quick brown fox", "--threshold", "1").stdout.splitlines()
    )
