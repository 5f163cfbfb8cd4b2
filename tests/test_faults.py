"""Nothing hangs and nothing is left half-done when anything fails: a fault injected at each phase of a run (start-up,
step, evaluation, save, export, finish; 0 and 2 data workers; 1 and 2 processes; the fine-tuner too) ends every
process within seconds with exit code 1, releases the run folder, and leaves no partial checkpoint behind."""

import subprocess
import sys
import time

import pytest

from electra_pretrain.run_lock import RunLock

from .helpers.corpora import write_classification_csv
from .helpers.runs import ENV, ROOT, TORCHRUN, overrides

FAULTY = str(ROOT / "tests" / "helpers" / "faulty.py")
EXIT_WITHIN_S = 60  # measured: 3-9 s from start to exit, the fault included


def run_faulty(app: str, phase: str, args: list[str], processes: int = 1, port: int = 29621):
    launcher = [sys.executable] if processes == 1 else [*TORCHRUN, "--master_port", str(port)]
    start = time.time()
    result = subprocess.run(
        [*launcher, FAULTY, app, phase, *args],
        cwd=ROOT,
        env={**ENV, "ACCELERATE_USE_CPU": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, time.time() - start


def assert_released(out) -> None:
    RunLock(out).release()  # raises if a process still held the folder
    assert not list(out.glob("checkpoints/.tmp_*")), "a partial checkpoint was left behind"


CASES = [(phase, 2, 1) for phase in ("startup", "step", "evaluation", "save", "export", "finish")] + [
    ("step", 0, 2),
    ("save", 2, 2),
    ("export", 0, 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("phase, workers, processes", CASES)
def test_a_fault_in_pretraining_ends_every_process_promptly(corpus, tmp_path, phase, workers, processes):
    out = tmp_path / "run"
    args = overrides(
        corpus, out, f"data.num_workers={workers}", "trainer.eval_every=2", f"data.eval_files=[{corpus}/part0.txt]"
    )
    result, seconds = run_faulty("train", phase, args, processes, port=29621 + len(phase) + workers)
    assert result.returncode == 1, result.stderr[-2000:]
    assert seconds < EXIT_WITHIN_S, seconds
    if phase == "export":  # a full disk: one line naming the cause and the remedy
        assert "error: no space left on device" in result.stderr and "choose an output_dir" in result.stderr
        assert not (out / "export").exists()
    else:  # a bug: its traceback, naming where it happened
        assert "injected fault" in result.stderr
    assert_released(out)


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["step", "evaluation", "finish"])
def test_a_fault_in_fine_tuning_ends_the_run_and_releases_the_folder(tiny_export, tmp_path, phase):
    train = write_classification_csv(tmp_path / "train.csv", 80, seed=1)
    out = tmp_path / "out"
    result, seconds = run_faulty(
        "finetune",
        phase,
        [
            f"model_path={tiny_export}",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{train}]",
            "trainer.epochs=2",
            "trainer.batch_size=16",
            "logging=none",
            f"output_dir={out}",
        ],
    )
    assert result.returncode == 1 and seconds < EXIT_WITHIN_S, result.stderr[-2000:]
    if phase == "finish":
        assert "error: no space left on device" in result.stderr
        assert not (out / "model").exists() and not (out / "results.json").exists()
    else:
        assert "injected fault" in result.stderr
    RunLock(out).release()
