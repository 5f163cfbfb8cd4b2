"""Every artefact is verified where it is read, exports appear whole or not at all, the tools degrade gracefully and
the logs tell the truth: each fault injected for real, the outcome asserted (exit code, the one-line message, what is
left on disk)."""

import json
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from .helpers.runs import ENV, ROOT, metrics, overrides, train

CLI = (sys.executable, "-m", "electra_pretrain")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def flip_a_bit(path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x10  # in the tensor data, past the header
    path.write_bytes(bytes(data))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_evaluate_and_export_verify_a_checkpoint_and_name_a_damaged_file(corpus, uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    checkpoint = run / "checkpoints" / "step_12"
    flip_a_bit(checkpoint / "model.safetensors")
    for args in (
        ("evaluate", checkpoint, "--data", corpus / "part0.txt"),
        ("export", checkpoint, "--out", tmp_path / "x"),
    ):
        error = one_line_error(run_cli(*args))
        assert "model.safetensors: does not match its checksum in" in error and "--no-verify" in error
    assert run_cli("export", checkpoint, "--out", tmp_path / "x", "--no-verify").returncode == 0  # one weight changed
    truncate(checkpoint / "model.safetensors")
    error = one_line_error(run_cli("export", checkpoint, "--out", tmp_path / "y", "--no-verify"))
    assert "model.safetensors: not a readable safetensors file" in error and "damaged or truncated" in error


@pytest.mark.slow
def test_exports_carry_checksums_that_detect_and_fine_tuning_check(corpus, uninterrupted, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(uninterrupted / "export", export)
    discriminator = export / "discriminator"
    manifest = json.loads((discriminator / "checksums.json").read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt"} <= set(manifest)
    flip_a_bit(discriminator / "model.safetensors")
    assert "does not match its checksum" in one_line_error(run_cli("detect", discriminator, "the fox"))
    assert "does not match its checksum" in one_line_error(run_cli("evaluate", export, "--data", corpus))
    truncate(discriminator / "model.safetensors")
    assert "not a readable safetensors file" in one_line_error(
        run_cli("detect", discriminator, "the fox", "--no-verify")
    )


@pytest.mark.slow
def test_non_finite_weights_in_an_init_folder_are_named(corpus, uninterrupted, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(uninterrupted / "export", export)
    weights = load_file(export / "discriminator" / "model.safetensors")
    weights["electra.embeddings.word_embeddings.weight"][3, 1] = float("nan")
    save_file(weights, export / "discriminator" / "model.safetensors")
    result = train(
        overrides(corpus, tmp_path / "cont", f"model.init_from={export}", "model.verify_checksums=false"), check=False
    )
    error = one_line_error(result)
    assert "tensor electra.embeddings.word_embeddings.weight holds non-finite values" in error
    assert "non-finite loss" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_failed_export_leaves_the_previous_one_whole(corpus, uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    before = {p.relative_to(run): p.read_bytes() for p in (run / "export").rglob("*") if p.is_file()}
    args = overrides(corpus, run, "trainer.max_steps=14", "trainer.allow_config_change=[trainer.max_steps]")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "helpers" / "faulty.py"), "train", "export_midway", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "no space left on device" in one_line_error(result)
    after = {p.relative_to(run): p.read_bytes() for p in (run / "export").rglob("*") if p.is_file()}
    assert after == before  # the old export, whole: not a mix with the half-written new one
    assert not (run / ".tmp_export").exists()  # the half-written one is gone


@pytest.mark.slow
def test_plot_skips_a_cut_last_line_and_refuses_an_empty_run(uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "loss": 3')  # a kill cut the last line
    result = run_cli("plot", run, "--out", tmp_path / "c.png")
    assert result.returncode == 0 and "the last line was cut short" in result.stdout
    (run / "metrics.jsonl").write_text("")
    assert "no rows yet" in one_line_error(run_cli("plot", run, "--out", tmp_path / "d.png"))


@pytest.mark.slow
def test_detect_windows_a_long_text_refuses_an_empty_one_and_says_its_verdict(uninterrupted):
    folder = uninterrupted / "export" / "discriminator"
    long = " ".join(["the quick brown fox"] * 60)  # far over the model's 64 positions
    rows = json.loads(run_cli("detect", folder, long, "--json", "--threshold", "0.3").stdout)
    assert len(rows) > 64 and all(r["replaced"] == (r["probability"] > 0.3) for r in rows)
    assert "scored in" in run_cli("detect", folder, long).stdout
    assert "the text is empty" in one_line_error(run_cli("detect", folder, "   "))


@pytest.mark.slow
def test_tokenizer_training_skips_binary_files_as_training_does(corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    (data / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    result = run_cli("tokenizer", "train", data, "--vocab-size", "300", "--out", tmp_path / "tok")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'binary_files_skipped': 1" in result.stdout and "picture.png: binary" in result.stderr


@pytest.mark.slow
def test_logs_tell_the_truth(corpus, uninterrupted, tmp_path):
    # a file that ends with a newline holds no empty document
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "a.txt").write_text(
        "".join(f"document {i} about the quick brown fox and the lazy dog.\n" for i in range(40))
    )
    args = [a for a in overrides(lines, tmp_path / "l", "trainer.max_steps=2") if not a.startswith("tokenizer.path")]
    result = train([*args, f"tokenizer.path={corpus.parent / 'tokenizer'}", "data.document_boundary=line"])
    assert "empty_documents" not in result.stdout
    # a resume with another trainer.max_steps says the learning rate changes
    run = tmp_path / "longer"
    shutil.copytree(uninterrupted, run)
    result = train(overrides(corpus, run, "trainer.max_steps=24", "trainer.allow_config_change=[trainer.max_steps]"))
    assert "notice: the schedule changed on resume" in result.stdout
    # continuing from an export with another recipe names the keys that differ
    result = train(
        overrides(
            corpus,
            tmp_path / "cont",
            f"model.init_from={uninterrupted / 'export'}",
            "model.temperature=2.0",
            "trainer.max_steps=2",
        )
    )
    assert "notice: continuing from an export trained with another recipe" in result.stdout
    assert "model.temperature 1.0 there -> 2.0 here" in result.stdout
    # evaluate takes a run folder: its newest checkpoint
    result = run_cli("evaluate", uninterrupted, "--data", corpus / "part0.txt", "--json")
    assert result.returncode == 0 and "checkpoints/step_12" in result.stdout
    assert metrics(uninterrupted)[-1]["step"] == 12
