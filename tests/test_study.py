"""`electra-pretrain study` end to end on a tiny generated task: RTD and masked-LM pretraining at equal FLOPs on the
training split's text only, every start fine-tuned at each label count with its own lr search, the table, the plot,
and a rerun that resumes instead of redoing."""

import json
import subprocess
import sys

import pytest

from .helpers.corpora import write_classification_csv
from .helpers.runs import ENV, ROOT


def study(out, task, tokenizer, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_pretrain",
            "study",
            str(out),
            *task,
            "--pretrain",
            "experiment=cpu_domain",
            "trainer.max_steps=8",
            "trainer.global_batch_size=8",
            "data.max_seq_length=32",
            f"tokenizer.path={tokenizer}",  # the test corpus's: the task's 40 short rows hold too few words
            "trainer.save_every=8",
            "trainer.eval_every=0",
            "trainer.log_every=2",
            "optim.warmup_steps=2",
            "logging=none",
            "--finetune",
            "task.max_length=16",
            "--labels",
            "10,all",
            "--seeds",
            "0,1",
            "--lrs",
            "1e-3,3e-3",
            *extra,
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_study_pretrains_both_objectives_at_equal_flops_and_fine_tunes_every_start(corpus, tmp_path):
    data = tmp_path / "task"
    data.mkdir()
    write_classification_csv(data / "train.csv", 40, seed=1)
    write_classification_csv(data / "dev.csv", 24, seed=2)
    write_classification_csv(data / "test.csv", 24, seed=3)
    (data / "dev.csv").write_text((data / "dev.csv").read_text().replace("lazy", "validationonly"))
    task = [
        "task=classification",
        f"task.train_files=[{data / 'train.csv'}]",
        f"task.validation_files=[{data / 'dev.csv'}]",
        f"task.test_files=[{data / 'test.csv'}]",
    ]
    out = tmp_path / "study"
    result = study(out, task, corpus.parent / "tokenizer")
    assert result.returncode == 0, result.stderr[-3000:]

    # pretraining read the training split's text only, the labels dropped
    text = (out / "unlabeled" / "train.txt").read_text()
    assert len(text.splitlines()) == 40 and "validationonly" not in text and ",pos" not in text
    # the masked LM spent the RTD run's FLOPs (to within one step's worth), from the RTD run's tokenizer
    last = {
        name: json.loads((out / "pretrain" / name / "metrics.jsonl").read_text().splitlines()[-1])
        for name in ("rtd", "mlm")
    }
    step_flops = last["rtd"]["flops"] / last["rtd"]["step"]
    assert (
        last["rtd"]["flops"] <= last["mlm"]["flops"] < last["rtd"]["flops"] + last["mlm"]["flops"] / last["mlm"]["step"]
    )
    assert step_flops > 0 and (out / "pretrain" / "mlm" / "export" / "mlm").is_dir()

    report = json.loads((out / "study.json").read_text())
    assert report["split"] == "test" and report["metric"] == "accuracy" and report["train_examples"] == 40
    assert report["pretraining_flops"] == last["rtd"]["flops"]
    for start in ("rtd", "mlm", "random"):
        for count, labels in (("10", 10), ("all", 40)):
            cell = report["cells"][start][count]
            assert cell["labels"] == labels and sorted(cell["seeds"]) == [0, 1]
            assert cell["lr"] in (1e-3, 3e-3) and set(cell["search"]) == {"0.001", "0.003"}
            # the lr is the one that scored best on validation
            assert cell["search"][f"{cell['lr']:g}"] == max(cell["search"].values())
            assert cell["min"] <= cell["median"] <= cell["max"] and all(0 <= s <= 1 for s in cell["scores"])
    # each start fine-tuned on the subsample of 10 (seeded and stratified: tests/test_finetune.py)
    searched = json.loads((out / "finetune" / "random" / "10" / "lr0.001" / "results.json").read_text())
    assert searched["model_init"] == "random" and searched["per_seed"][0]["train_examples"] == 10
    table = (out / "study.md").read_text()
    assert table.count("\n| ") == 4 and "| random |" in table and "all (40)" in table  # the header and three starts
    assert (out / "study.png").stat().st_size > 10_000

    # a rerun resumes: nothing is pretrained or fine-tuned again, the same report comes back
    again = study(out, task, corpus.parent / "tokenizer")
    assert (
        again.returncode == 0 and "study: pretraining" not in again.stdout and "study: fine-tuning" not in again.stdout
    )
    assert json.loads((out / "study.json").read_text()) == report


def test_study_refuses_a_bad_grid_in_one_line(tmp_path):
    result = study(tmp_path / "s", ["task=spam"], tmp_path, "--starts", "rtd,bert")
    assert result.returncode != 0 and "unknown start(s) ['bert']" in result.stderr
    assert "Traceback" not in result.stderr
