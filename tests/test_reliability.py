"""Faults a run meets, injected for real, and what it must do about each: a clear error naming the culprit, a
counted skip, or correct behaviour. Nothing lost, nothing silently wrong."""

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from electra_pretrain.modeling import ElectraDiscriminator, ElectraGenerator
from electra_pretrain.pretrain.checkpoint import Checkpointer
from electra_pretrain.pretrain.config import TrainerConfig
from electra_pretrain.pretrain.objective import Electra
from electra_pretrain.pretrain.step import LossSpikeGuard, SkipCounts, train_step
from electra_pretrain.run_lock import RunLock
from electra_pretrain.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer
from electra_pretrain.wordpiece_trainer import count_words, learn_vocabulary

from .helpers.corpora import tiny_config
from .helpers.runs import ENV, ROOT, TORCHRUN, assert_same_exports, losses, metrics, overrides, start, train


def without(args: list[str], prefix: str) -> list[str]:
    return [a for a in args if not a.startswith(prefix)]


def wait_for(path: Path, child: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert child.poll() is None and time.time() < deadline, f"run ended or timed out before {path} appeared"
        time.sleep(0.05)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# 1. The same command twice gives the same tokenizer and the same model.


def test_wordpiece_merges_break_ties_by_symbol_ids():
    # Three merges of equal count: the two kept have the smallest ids (the alphabet is numbered in text order),
    # whatever the hash order.
    vocab = learn_vocabulary(Counter({"ef": 2, "cd": 2, "ab": 2}), vocab_size=5 + 9 + 2, special_tokens=SPECIAL_TOKENS)
    assert vocab == [*SPECIAL_TOKENS, "a", "b", "c", "d", "e", "f", "##b", "##d", "##f", "ab", "cd"]


@pytest.mark.slow
def test_same_command_twice_gives_the_same_tokenizer_and_weights(corpus, tmp_path):
    runs = [tmp_path / name for name in ("a", "b")]
    for out in runs:
        train([*without(overrides(corpus, out, "trainer.max_steps=3"), "tokenizer.path"), "tokenizer.vocab_size=400"])
    assert (runs[0] / "tokenizer" / "tokenizer.json").read_bytes() == (
        runs[1] / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    assert_same_exports(*runs)


# 2. A huge word does not stall tokenizer training.


def test_words_over_200_characters_are_left_out_of_training_and_are_unk():
    huge = "x" * 400_000
    counts, too_long = count_words(
        [f"{huge} some words", "more words " + "y" * 200],
        train_tokenizer([], 200, show_progress=False),
        show_progress=False,
    )
    assert too_long == 1 and counts["y" * 200] == 1 and huge not in counts
    tokenizer = train_tokenizer([f"{huge} the quick brown fox"] * 3, vocab_size=200, show_progress=False)
    assert tokenizer.encode(huge).tokens == ["[CLS]", "[UNK]", "[SEP]"]
    assert "[UNK]" not in tokenizer.encode("the quick brown fox").tokens


# 3. A degenerate tokenizer is an error; a failed start never blocks the corrected rerun.


@pytest.mark.slow
def test_empty_data_is_an_error_and_the_corrected_rerun_is_not_refused(corpus, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    out = tmp_path / "run"
    args = without(overrides(corpus, out, "trainer.max_steps=2", "tokenizer.vocab_size=300"), "tokenizer.path")
    error = one_line_error(train([*without(args, "data.files"), f"data.files=[{tmp_path}/empty.txt]"], check=False))
    assert "has only 5 tokens" in error
    assert not (out / "tokenizer").exists() and not (out / "config.yaml").exists()
    train(args)  # the corrected command, no allow_config_change needed
    assert (out / "export" / "discriminator" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_tokenizer_that_turns_the_data_into_unk_is_refused(corpus, tmp_path):
    greek = tmp_path / "greek"
    greek.mkdir()
    (greek / "a.txt").write_text("Αυτό είναι ένα ελληνικό κείμενο για τη δοκιμή.\n" * 100)
    args = [*without(overrides(corpus, tmp_path / "run"), "data.files"), f"data.files=[{greek}/*.txt]"]
    error = one_line_error(train(args, check=False))
    assert "into [UNK]" in error and "tokenizer.max_unknown_share=0.2" in error


@pytest.mark.slow
def test_a_moved_and_relatively_named_run_folder_resumes(corpus, uninterrupted, tmp_path):
    moved = copy_run(uninterrupted, tmp_path / "moved")
    relative = os.path.relpath(moved, ROOT)
    result = train(
        overrides(corpus, Path(relative), "trainer.max_steps=14", "trainer.allow_config_change=[trainer.max_steps]")
    )
    assert (
        "at step 12" in result.stdout
        and "config change allowed on resume: trainer.max_steps: 12 -> 14" in result.stdout
    )


# 4. Signals to the whole job, data workers included, save and exit with the requeue code.


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_to_every_process_with_a_data_worker_saves_and_exits_75(corpus, tmp_path, sig):
    out = tmp_path / "job"
    child = start(overrides(corpus, out, "data.num_workers=1", "trainer.max_steps=5000", "trainer.log_every=50"))
    wait_for(out / "checkpoints" / "step_4", child)
    os.killpg(child.pid, sig)  # as SLURM and Ctrl-C do: the main process and its data worker
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr and "DataLoader worker" not in stderr
    step = int(re.search(r"stop requested: saved step (\d+)", stdout).group(1))
    assert (out / "checkpoints" / f"step_{step}" / "trainer_state.json").is_file()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_a_second_sigint_aborts():
    from electra_pretrain.signals import StopFlag

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        flag = StopFlag()
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# 5. One run per folder; no process outlives its launcher.


@pytest.mark.slow
def test_a_second_run_in_the_same_folder_is_refused_naming_the_holder(corpus, tmp_path):
    out = tmp_path / "busy"
    lock = RunLock(out)
    try:
        error = one_line_error(train(overrides(corpus, out), check=False))
    finally:
        lock.release()
    assert f"in use by pid {os.getpid()} on {socket.gethostname()}" in error
    assert not (out / "metrics.jsonl").exists() and not (out / "config.yaml").exists()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGUSR1], ids=lambda s: s.name)
def test_workers_save_and_stop_when_their_launcher_dies(corpus, tmp_path, sig):
    out = tmp_path / "orphans"
    launcher = subprocess.Popen(
        [
            *TORCHRUN,
            "--master_port",
            str(29541 + sig),
            str(ROOT / "train.py"),
            *overrides(corpus, out, "trainer.max_steps=5000", "trainer.log_every=50"),
        ],
        cwd=ROOT,
        env={**ENV, "ACCELERATE_USE_CPU": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(out / "checkpoints" / "step_4", launcher)
    workers = _children(launcher.pid)
    assert len(workers) == 2
    launcher.send_signal(sig)
    launcher.wait(30)
    deadline = time.time() + 60
    while any(_alive(pid) for pid in workers):
        assert time.time() < deadline, "workers outlived their launcher"
        time.sleep(0.1)
    newest = max(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert newest > 4  # they saved on the way out
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


# 6. Damage is caught by checksums and repaired from what is intact.


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt"])
def test_a_flipped_bit_is_caught_and_the_previous_checkpoint_used(corpus, uninterrupted, tmp_path, name):
    out = copy_run(uninterrupted, tmp_path / "flipped")
    path = out / "checkpoints" / "step_12" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    result = train(overrides(corpus, out, "trainer.max_steps=14", "trainer.allow_config_change=[trainer.max_steps]"))
    text = result.stdout + result.stderr
    assert f"{name}: does not match its checksum" in text and "step_8 at step 8" in text


@pytest.mark.slow
def test_a_damaged_run_tokenizer_is_restored_from_the_checkpoint(corpus, tmp_path):
    out = tmp_path / "own"
    args = [*without(overrides(corpus, out, "trainer.max_steps=4"), "tokenizer.path"), "tokenizer.vocab_size=300"]
    train(args)
    (out / "tokenizer" / "tokenizer.json").write_text("{not json")
    result = train([*args, "trainer.max_steps=6", "trainer.allow_config_change=[trainer.max_steps]"])
    assert "restored it from that copy" in result.stdout and "at step 4" in result.stdout
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == (
        out / "checkpoints" / "step_4" / "tokenizer" / "tokenizer.json"
    ).read_bytes()


# 7. Non-finite or exploding training never reaches a checkpoint.


def _tiny_electra() -> Electra:
    config = tiny_config()
    return Electra(
        ElectraGenerator(config), ElectraDiscriminator(config), mask_token_id=4, special_token_ids=[0, 2, 3, 4]
    )


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from accelerate import Accelerator

    model = _tiny_electra()
    with torch.no_grad():
        model.discriminator.discriminator_predictions.dense.weight[0, 0] = float("inf")
    checkpointer = Checkpointer(Accelerator(cpu=True), tmp_path, TrainerConfig())
    try:
        with pytest.raises(FloatingPointError, match="step 3: the weights hold non-finite values"):
            checkpointer.save(3, model, None, None, {}, {}, "", None)
    finally:
        checkpointer.close()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("implementation", ["fused", "foreach"])  # skipped on the device, or after a sync
def test_a_loss_spike_or_a_non_finite_step_leaves_weights_and_moments_untouched(implementation):
    from accelerate import Accelerator

    from electra_pretrain.optim import build_optimizer
    from electra_pretrain.pretrain.config import OptimConfig

    model = _tiny_electra()
    optimizer = build_optimizer(model, OptimConfig(implementation=implementation), lr=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    guard, skips = LossSpikeGuard(factor=2.0, device=torch.device("cpu"), warmup=1), SkipCounts(torch.device("cpu"))
    guard.accept(torch.tensor(1.0), torch.tensor(True))  # running mean 1; a fresh model's loss is about 40
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = {"input_ids": torch.randint(5, 40, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    train_step(model, [batch], optimizer, scheduler, Accelerator(cpu=True), 1.0, guard, skips)
    with torch.no_grad():
        model.discriminator.discriminator_predictions.dense.weight[0, 0] = float("nan")
    before_nan = {k: v.clone() for k, v in model.state_dict().items()}
    train_step(model, [batch], optimizer, scheduler, Accelerator(cpu=True), 1.0, guard, skips)
    assert skips.read() == ({"non_finite": 1, "loss_spike": 1, "fp16_overflow": 0}, 2, 2)
    after = model.state_dict()
    assert all(
        torch.equal(before[k], before_nan[k])
        for k in before
        if k != "discriminator.discriminator_predictions.dense.weight"
    )
    assert all(torch.equal(before_nan[k], after[k]) or torch.isnan(after[k]).any() for k in after)
    for state in optimizer.state.values():  # no moment moved, no step counted
        assert int(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    assert guard.state_dict() == {"mean": 1.0, "accepted": 1}


@pytest.mark.slow
def test_loss_spikes_stop_the_run_at_the_next_check_when_asked(corpus, tmp_path):
    out = tmp_path / "spiky"
    # lr 0.05 makes the loss jump past 1.01 x its running mean within the first steps
    error = one_line_error(
        train(
            overrides(
                corpus,
                out,
                "trainer.loss_spike_factor=1.01",
                "optim.lr=0.05",
                "optim.warmup_steps=0",
                "trainer.loss_spike_action=stop",
                "trainer.log_every=4",
            ),
            check=False,
        )
    )
    assert re.match(r"error: steps 1-4: \d loss spike\(s\) over 1.01 x the running mean loss .*; stopped", error), error
    assert not list((out / "checkpoints").glob("step_*"))


@pytest.mark.slow
def test_a_blown_up_run_stops_without_checkpointing_garbage(corpus, tmp_path):
    out = tmp_path / "blown"
    error = one_line_error(
        train(overrides(corpus, out, "optim.lr=1e9", "optim.warmup_steps=0", "trainer.max_steps=40"), check=False)
    )
    assert "skipped steps in a row" in error or "non-finite" in error
    assert not list((out / "checkpoints").glob("step_*"))


# 8. Input that is not what it claims to be.


@pytest.mark.slow
def test_binary_files_are_skipped_and_counted_and_nothing_left_is_an_error(corpus, tmp_path):
    data = tmp_path / "mixed"
    data.mkdir()
    shutil.copy(corpus / "part0.txt", data / "good.txt")
    (data / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    shutil.copy(sys.executable, data / "program")
    args = without(overrides(corpus, tmp_path / "run", "trainer.max_steps=2"), "data.files")
    result = train([*args, f"data.files=[{data}]"])
    assert "'binary_files_skipped': 2" in result.stdout
    error = one_line_error(
        train(
            [
                *without(args, "output_dir"),
                f"output_dir={tmp_path}/run2",
                f"data.files=[{data}/image.txt,{data}/program]",
            ],
            check=False,
        )
    )
    assert "holds no text file (2 binary file(s) skipped)" in error


@pytest.mark.slow
def test_structured_files_read_as_plain_text_are_refused(corpus, tmp_path):
    (tmp_path / "table.csv").write_text("text,label\nhello world,1\n")
    args = without(overrides(corpus, tmp_path / "run"), "data.files")
    error = one_line_error(train([*args, f"data.files=[{tmp_path}/table.csv]"], check=False))
    assert "table.csv is a csv file" in error and "data.format=auto" in error


@pytest.mark.slow
def test_a_malformed_jsonl_record_is_named_by_file_and_line(corpus, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "one two three"}\n\n{"text": "four"}\n{"text": broken\n')
    args = without(overrides(corpus, tmp_path / "run"), "data")
    error = one_line_error(train([*args, "data=jsonl", f"data.files=[{path}]", "data.max_seq_length=64"], check=False))
    assert f"{path}:4: not a JSON record" in error


@pytest.mark.slow
def test_damaged_tokenizer_and_config_files_are_one_line_errors(tmp_path, uninterrupted):
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match=r"vocab.txt: not a vocabulary file \(invalid UTF-8"):
        load_tokenizer(tmp_path / "vocab.txt")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text('{"version": "1.0", "model": 5}')
    with pytest.raises(ValueError, match=r"tokenizer.json: not a tokenizer file this version reads"):
        load_tokenizer(tmp_path / "tok")
    checkpoint = copy_run(uninterrupted / "checkpoints" / "step_12", tmp_path / "step_12")
    (checkpoint / "config.yaml").write_text("model: [1, 2\n")
    cli = [sys.executable, "-m", "electra_pretrain"]
    export = subprocess.run(
        [*cli, "export", str(checkpoint), "--out", str(tmp_path / "x")], env=ENV, capture_output=True, text=True
    )
    assert "config.yaml: not a training config this version reads" in one_line_error(export)
    detect = subprocess.run(
        [*cli, "detect", str(uninterrupted / "export" / "generator"), "a b"], env=ENV, capture_output=True, text=True
    )
    assert "holds ElectraForMaskedLM weights" in one_line_error(detect)


@pytest.mark.slow
def test_fp16_on_cpu_is_refused(corpus, tmp_path):
    error = one_line_error(train(overrides(corpus, tmp_path / "run", "trainer.mixed_precision=fp16"), check=False))
    assert "trainer.mixed_precision=fp16 needs a GPU" in error


# 9. A full disk.


@pytest.mark.slow
def test_a_full_disk_leaves_the_previous_checkpoint_and_no_partial_folder(corpus, uninterrupted, tmp_path):
    out = copy_run(uninterrupted, tmp_path / "full")
    limit = (out / "checkpoints" / "step_12" / "model.safetensors").stat().st_size // 2

    def small_disk():  # writes past `limit` bytes per file fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = train(
        overrides(corpus, out, "trainer.max_steps=16", "trainer.allow_config_change=[trainer.max_steps]"),
        check=False,
        preexec_fn=small_disk,
    )
    error = one_line_error(result)
    assert "writing checkpoint" in error and "step_16 failed" in error and "removed the partial folder" in error
    assert error.startswith("error: no space left on device")  # not torch's "unexpected pos"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_12", "step_4", "step_8"]
    assert (
        "at step 12"
        in train(
            overrides(corpus, out, "trainer.max_steps=16", "trainer.allow_config_change=[trainer.max_steps]")
        ).stdout
    )


# 10. metrics.jsonl after a resume.


@pytest.mark.slow
def test_metrics_after_a_resume_hold_every_step_once_in_whole_lines(corpus, uninterrupted, tmp_path):
    out = copy_run(uninterrupted, tmp_path / "again")
    shutil.rmtree(out / "checkpoints" / "step_12")  # resume from 8: steps 9-12 are trained and logged again
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "loss": 4')  # a line cut short by a kill
    train(overrides(corpus, out))
    assert [row["step"] for row in metrics(out)] == list(range(1, 13))
    assert losses(out) == losses(uninterrupted)


# 11. Hydra sweeps.


@pytest.mark.slow
def test_sweep_jobs_get_their_own_folders_and_a_refused_job_does_not_end_the_sweep(corpus, tmp_path):
    out = tmp_path / "sweep"
    lock = RunLock(out / "0")  # job 0's folder is busy
    try:
        result = train(["-m", *overrides(corpus, out, "trainer.max_steps=2"), "seed=0,1"], check=False)
    finally:
        lock.release()
    assert result.returncode == 1 and "1 sweep job(s) did not finish" in result.stderr
    assert (out / "1" / "export" / "discriminator").is_dir() and not (out / "0" / "export").exists()
    assert "seed: 1" in (out / "1" / "config.yaml").read_text()
