"""The trainer end to end: config validation, exact resume after SIGKILL / SIGTERM, two CPU processes, exports."""

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from electra_pretrain.optim import lr_multiplier, parameter_groups
from electra_pretrain.tokenizer import MIN_VOCAB_SIZE

from .helpers.corpora import tiny_config
from .helpers.runs import ENV, ROOT, assert_same_exports, losses, metrics, overrides, train


@pytest.mark.slow
def test_run_writes_checkpoints_metrics_and_loadable_exports(uninterrupted):
    out = uninterrupted
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_12", "step_4", "step_8"]
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "step_12" / "tokenizer" / "vocab.txt").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert {"loss", "mlm_loss", "rtd_loss", "lr", "tokens_per_s", "tokens"} <= rows[0].keys()
    assert rows[-1]["loss"] < rows[0]["loss"]
    disc, info = transformers.ElectraForPreTraining.from_pretrained(
        out / "export" / "discriminator", output_loading_info=True
    )
    assert not any(info.values())
    gen = transformers.ElectraForMaskedLM.from_pretrained(out / "export" / "generator")
    tok = transformers.ElectraTokenizerFast.from_pretrained(out / "export" / "generator")
    fill = transformers.pipeline("fill-mask", model=gen, tokenizer=tok)
    assert len(fill("the quick brown [MASK] jumps.")) == 5
    for name in ("discriminator", "generator"):  # shareable: a model card, the config, files others can read
        folder = out / "export" / name
        card = (folder / "README.md").read_text()
        assert card.startswith(f"# ELECTRA {name}") and "| trained | 12 steps" in card
        assert (folder / "train_config.yaml").read_text() == (out / "config.yaml").read_text()
        assert all(p.stat().st_mode & 0o044 == 0o044 for p in folder.iterdir())
    # shared embeddings: both exports carry the same copy
    wd = load_file(out / "export" / "discriminator" / "model.safetensors")
    wg = load_file(out / "export" / "generator" / "model.safetensors")
    assert torch.equal(wd["electra.embeddings.word_embeddings.weight"], wg["electra.embeddings.word_embeddings.weight"])


def kill_after_first_checkpoint(args: list[str], out: Path, sig: int) -> int:
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step_4").exists():
        assert child.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    child.send_signal(sig)
    return child.wait(60)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_bit_exactly(corpus, uninterrupted, tmp_path, sig):
    out = tmp_path / "killed"
    args = overrides(corpus, out)
    code = kill_after_first_checkpoint(args, out, sig)
    if sig == signal.SIGTERM:
        assert code == 75  # saved and exited cleanly, with the code that asks a scheduler to requeue
    assert not (out / "export").exists()  # it did not get to the end
    resumed = train(args)
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert losses(out) == losses(uninterrupted)  # bit-identical per-step losses
    assert_same_exports(out, uninterrupted)


@pytest.mark.slow
def test_killed_run_with_two_data_workers_resumes_bit_exactly(corpus, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    train(overrides(corpus, reference, "data.num_workers=2"))
    args = overrides(corpus, out, "data.num_workers=2")
    kill_after_first_checkpoint(args, out, signal.SIGKILL)
    assert "resumed from" in train(args).stdout
    assert losses(out) == losses(reference)
    assert_same_exports(out, reference)


@pytest.mark.slow
def test_unreadable_checkpoint_falls_back_to_previous(corpus, uninterrupted, tmp_path):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(uninterrupted), str(out)], check=True)
    (out / "checkpoints" / "step_12" / "model.safetensors").write_bytes(b"\x00" * 100)  # truncated
    result = train(overrides(corpus, out, "trainer.max_steps=14", "trainer.allow_config_change=[trainer.max_steps]"))
    text = result.stdout + result.stderr
    assert "step_12 is damaged or unreadable" in text and "resumed from" in text and "step_8 at step 8" in text


@pytest.mark.slow
def test_output_dir_with_another_config_is_refused(corpus, uninterrupted):
    result = train(overrides(corpus, uninterrupted, "model.mask_prob=0.2"), check=False)
    assert result.returncode != 0
    assert "model.mask_prob: 0.15 -> 0.2" in result.stderr
    assert "trainer.allow_config_change=[model.mask_prob]" in result.stderr


@pytest.mark.slow
def test_tokenizer_that_does_not_match_the_checkpoint_is_refused(corpus, uninterrupted, tmp_path):
    other = tmp_path / "other_tok"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_pretrain",
            "tokenizer",
            "train",
            str(corpus),
            "--vocab-size",
            "250",
            "--cased",
            "--out",
            str(other),
        ],
        check=True,
        env=ENV,
        capture_output=True,
    )
    result = train(
        overrides(corpus, uninterrupted, f"tokenizer.path={other}", "trainer.allow_config_change=[tokenizer.path]"),
        check=False,
    )
    assert result.returncode != 0 and "trained with another tokenizer" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_stepz=3", "max_stepz"),
        ("trainer.mixed_precision=fp8", "trainer.mixed_precision='fp8'"),
        ("trainer.global_batch_size=ten", "global_batch_size"),
        ("model=huge", "model"),
        ("+trainer.max_stepz=3", "unknown config key 'trainer.max_stepz'"),
        ("+anything=1", "unknown config key 'anything'"),
    ],
)
def test_bad_overrides_fail_fast_naming_the_key(corpus, tmp_path, override, message):
    start = time.time()
    result = train(overrides(corpus, tmp_path / "bad", override), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert time.time() - start < 30
    assert not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.slow
def test_run_trains_its_own_tokenizer_when_none_is_given(corpus, tmp_path):
    out = tmp_path / "own"
    args = [a for a in overrides(corpus, out, "trainer.max_steps=2") if not a.startswith("tokenizer.path")]
    train([*args, "tokenizer.vocab_size=250"])
    assert MIN_VOCAB_SIZE <= len((out / "tokenizer" / "vocab.txt").read_text().split()) <= 250
    assert (out / "export" / "discriminator" / "vocab.txt").read_text() == (out / "tokenizer" / "vocab.txt").read_text()


@pytest.mark.slow
def test_missing_data_is_named(tmp_path):
    result = train(
        [
            "model=tiny",
            "data=text",
            f"data.files=[{tmp_path}/nothing*.txt]",
            f"output_dir={tmp_path}/o",
            "logging=none",
        ],
        check=False,
    )
    assert result.returncode != 0 and "nothing*.txt' matches no file" in result.stderr


@pytest.mark.slow
def test_two_cpu_processes_train_save_and_resume_on_one_and_back_on_two(corpus, uninterrupted, tmp_path):
    out = tmp_path / "ddp"
    launcher = ("bash", str(ROOT / "launch" / "cpu.sh"))  # the documented recipe, as the README writes it
    env = {"MASTER_PORT": "29533", "OMP_NUM_THREADS": "1"}
    if Path(sys.executable) != ROOT / ".venv" / "bin" / "python":  # cpu.sh finds the checkout's .venv by itself
        env["PYTHON"] = sys.executable
    first = train(overrides(corpus, out, "trainer.max_steps=4", "trainer.save_every=2"), launcher=launcher, env=env)
    assert "2 processes x 4 micro-batch x 1 accumulation" in first.stdout
    assert "data sharding: by file: each of the 2 readers reads only its own of the 2 files" in first.stdout
    saved = sorted(p.name for p in (out / "checkpoints" / "step_4").iterdir())
    assert {"data_0.pt", "data_1.pt", "rng_0.pt", "rng_1.pt"} <= set(saved)
    # 2 -> 1 process: weights, optimizer, schedule and counters carry over; the data is dealt out again.
    second = train(
        overrides(
            corpus,
            out,
            "trainer.max_steps=6",
            "trainer.save_every=2",
            "trainer.allow_config_change=[trainer.max_steps]",
        )
    )
    log = second.stdout + second.stderr
    assert "at step 4" in log and "resuming 2 process(es) x 1 reader(s) on 1 x 1" in log
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[4]["tokens"] > rows[3]["tokens"]
    # 1 -> 2 processes, from the one-process reference run's step 4: the same schedule as the uninterrupted run.
    grown = tmp_path / "grown"
    shutil.copytree(uninterrupted / "checkpoints" / "step_4", grown / "checkpoints" / "step_4")
    shutil.copy(uninterrupted / "config.yaml", grown / "config.yaml")
    shutil.copy(uninterrupted / "metrics.jsonl", grown / "metrics.jsonl")
    third = train(overrides(corpus, grown, "trainer.max_steps=12"), launcher=launcher, env=env)
    assert "resuming 1 process(es) x 1 reader(s) on 2 x 1" in third.stdout + third.stderr
    assert [r["lr"] for r in metrics(grown)] == [r["lr"] for r in metrics(uninterrupted)]
    assert all(math.isfinite(r["loss"]) for r in metrics(grown))


def test_schedule_and_decay_groups():
    assert lr_multiplier(0, 10, 100) == 0.0 and lr_multiplier(5, 10, 100) == pytest.approx(0.5 * 0.95)
    assert lr_multiplier(10, 10, 100) == pytest.approx(0.9) and lr_multiplier(100, 10, 100) == 0.0
    from electra_pretrain.modeling import ElectraDiscriminator

    model = ElectraDiscriminator(tiny_config())
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("implementation", ["foreach", "plain"])
def test_adam_without_bias_correction_matches_the_original_update(implementation):
    """GR optimization.py: m, v on raw moments; p -= lr * (m / (sqrt(v) + eps) + wd * p)."""
    from electra_pretrain.optim import AdamWWithoutBiasCorrection

    start = torch.randn(5, 3)
    param = torch.nn.Parameter(start.clone())
    lr, wd, eps, (b1, b2) = 0.1, 0.01, 1e-6, (0.9, 0.999)
    optimizer = AdamWWithoutBiasCorrection(
        [{"params": [param], "weight_decay": wd}],
        lr=lr,
        betas=(b1, b2),
        eps=eps,
        foreach=implementation == "foreach" or None,
    )
    expected, m, v = start.double(), torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64)
    for _ in range(6):
        grad = torch.randn(5, 3)
        param.grad = grad.clone()
        optimizer.step()
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad.double() ** 2
        expected = expected - lr * (m / (v.sqrt() + eps) + wd * expected)
    torch.testing.assert_close(param.detach().double(), expected, rtol=0, atol=2e-6)
    assert optimizer.param_groups[0]["lr"] == lr and optimizer.param_groups[0]["uncorrected_step"] == 6
    # torch's corrected AdamW takes a smaller first step: the original's is (1 - b1) / sqrt(1 - b2) ~ 3.2x larger.
    corrected = torch.nn.Parameter(start.clone())
    first = torch.optim.AdamW([corrected], lr=lr, betas=(b1, b2), eps=eps, weight_decay=0.0)
    uncorrected = torch.nn.Parameter(start.clone())
    second = AdamWWithoutBiasCorrection([uncorrected], lr=lr, betas=(b1, b2), eps=eps, weight_decay=0.0)
    grad = torch.randn(5, 3)
    corrected.grad, uncorrected.grad = grad.clone(), grad.clone()
    first.step()
    second.step()
    ratio = (uncorrected - start).abs().mean() / (corrected - start).abs().mean()
    assert ratio.item() == pytest.approx((1 - b1) / (1 - b2) ** 0.5, rel=2e-3)  # 3.16


@pytest.mark.slow
def test_a_finished_run_rerun_says_there_is_nothing_to_do(corpus, uninterrupted, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    result = train(overrides(corpus, out))
    assert "nothing to do" in result.stdout and "already at step 12 of trainer.max_steps=12" in result.stdout
    assert losses(out) == losses(uninterrupted)  # no step trained again, none lost
