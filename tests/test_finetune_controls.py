"""Fine-tuning controls (steps, accumulation, evaluation schedule, early stopping, keep, bf16, stop and resume), the
GLUE workflow, and the review's fixes: each reproduced on small generated data and asserted."""

import json
import random
import signal
import subprocess
import sys

import pytest

from electra_pretrain.finetune.config import FinetuneOptimConfig, TaskConfig
from electra_pretrain.finetune.data import read_split
from electra_pretrain.finetune.kinds import task_kind
from electra_pretrain.finetune.kinds.base import bounded
from electra_pretrain.finetune.readers import TaskExample
from electra_pretrain.finetune.train import better
from electra_pretrain.tokenizer import load_tokenizer

from .helpers.corpora import labelled_sentence, write_classification_csv, write_conll
from .helpers.finetune_runs import finetune, finetune_in_process, predictions
from .helpers.runs import ENV, ROOT

LEARNS = ["trainer.batch_size=16", "optim.lr=3e-3", "optim.layerwise_lr_decay=1.0", "task.max_length=32"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("controls")
    return write_classification_csv(folder / "train.csv", 160, seed=1), write_classification_csv(
        folder / "v.csv", 41, 2
    )


def common(tiny_export, files) -> list[str]:
    train, valid = files
    return [f"model_path={tiny_export}", f"task.train_files=[{train}]", f"task.validation_files=[{valid}]", *LEARNS]


def test_max_steps_accumulation_and_an_evaluation_every_n_steps(tiny_export, files, tmp_path):
    results = finetune_in_process(
        [
            *common(tiny_export, files),
            "trainer.max_steps=12",
            "trainer.micro_batch_size=8",
            "trainer.eval_every=5",
            f"output_dir={tmp_path / 'a'}",
        ]
    )
    evaluations = results["per_seed"][0]["evaluations"]
    assert [e["step"] for e in evaluations] == [5, 10, 12]  # every 5 steps and at the end
    assert [e["epoch"] for e in evaluations] == [1, 1, 2]  # 160 examples / 16 a step: 10 steps an epoch
    only_end = finetune_in_process(
        [*common(tiny_export, files), "trainer.epochs=2", "trainer.eval_every=0", f"output_dir={tmp_path / 'b'}"]
    )
    assert [e["step"] for e in only_end["per_seed"][0]["evaluations"]] == [20]


def test_early_stopping_and_keeping_the_best_evaluation(tiny_export, files, tmp_path):
    results = finetune_in_process(
        [
            *common(tiny_export, files),
            "trainer.epochs=8",
            "optim.lr=1e-9",
            "trainer.early_stopping_patience=2",
            "trainer.keep=best",
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    seed = results["per_seed"][0]
    assert seed["stopped_early"] and len(seed["evaluations"]) == 3  # lr 1e-9: the score never improves
    assert results["selection"].startswith("best") and "optimistic" in results["selection"]
    assert seed["kept_epoch"] == 3  # every evaluation ties: the later one is kept


def test_a_tie_on_the_first_metric_is_decided_by_the_next_and_a_full_tie_keeps_the_later():
    metrics = ["span_f1", "token_accuracy"]
    assert better({"span_f1": 0.0, "token_accuracy": 0.64}, {"span_f1": 0.0, "token_accuracy": 0.08}, metrics)
    assert not better({"span_f1": 0.0, "token_accuracy": 0.08}, {"span_f1": 0.0, "token_accuracy": 0.64}, metrics)
    assert better({"span_f1": 0.5, "token_accuracy": 0.5}, {"span_f1": 0.5, "token_accuracy": 0.5}, metrics)


def test_bf16_on_cpu_learns(tiny_export, files, tmp_path):
    results = finetune_in_process(
        [
            *common(tiny_export, files),
            "trainer.epochs=6",
            "trainer.mixed_precision=bf16",
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    assert results["validation"]["accuracy"] >= 0.9, results["validation"]  # measured 1.0 in fp32 (chance 0.5)


def test_layerwise_decay_is_the_originals_for_large_models():
    assert FinetuneOptimConfig().decay_for(256) == 0.8 and FinetuneOptimConfig().decay_for(1024, 24) == 0.9
    assert FinetuneOptimConfig().decay_for(128, 2) == 1.0  # shallow encoders: off (the study's measurement)
    assert FinetuneOptimConfig(layerwise_lr_decay=1.0).decay_for(1024) == 1.0


def test_a_word_that_tokenizes_to_nothing_shifts_no_tag(tiny_export):
    tokenizer = load_tokenizer(tiny_export / "discriminator")
    task = TaskConfig(name="ner", kind="token_classification", metrics=["span_f1"])
    kind = task_kind(task)
    words, tags = ["ann", "\u00ad", "lives", "in", "paris"], ["B-PER", "O", "O", "O", "B-LOC"]
    kind.learn_labels([TaskExample(words, tags, "x")])
    [feature] = kind.encode([TaskExample(words, tags, "x")], tokenizer)
    assert feature.first_tokens[1] is None  # the soft hyphen has no token
    paris = feature.first_tokens[4]
    assert kind.labels[feature.label[paris]] == "B-LOC"
    # a model that predicts every tag right (a one-hot output at each word's first token) scores span F1 1.0
    ids = [kind.labels.index("O")] * len(feature.input_ids)
    for word, position in enumerate(feature.first_tokens):
        if position is not None:
            ids[position] = kind.labels.index(tags[word])
    [prediction] = kind.predictions([TaskExample(words, tags, "x")], [feature], [ids])
    assert prediction.value == tags
    assert kind.score([TaskExample(words, tags, "x")], [prediction])["span_f1"] == 1.0


def test_a_tab_separated_classification_file_named_txt_is_read_as_tsv(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("text\tlabel\nsummer river\tpos\nwinter city\tneg\n")
    task = TaskConfig()
    examples = read_split(task_kind(task), task, "train", [str(path)])
    assert [(e.texts, e.label) for e in examples] == [(("summer river",), "pos"), (("winter city",), "neg")]


def test_bad_rows_are_named(tmp_path):
    task = TaskConfig()
    blank = tmp_path / "blank.csv"
    blank.write_text("text,label\nsummer,pos\nwinter,\n")
    with pytest.raises(ValueError, match=rf"{blank}:2: the label \('label'\) is empty"):
        read_split(task_kind(task), task, "train", [str(blank)])
    nan = tmp_path / "nan.tsv"
    nan.write_text("sentence1\tsentence2\tscore\na\tb\t1.5\nc\td\tnan\n")
    regression = TaskConfig(
        kind="regression", text_fields=["sentence1", "sentence2"], label_field="score", metrics=["pearson"]
    )
    with pytest.raises(ValueError, match=rf"{nan}:2: label 'nan' is not a finite number"):
        read_split(task_kind(regression), regression, "train", [str(nan)])
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\nsummer,pos\ncaf\xe9,neg\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{latin}:3: not UTF-8"):
        read_split(task_kind(task), task, "train", [str(latin)])


def test_a_huge_row_is_cut_before_it_is_tokenized(tiny_export):
    text = "summer river " * 500_000  # 6.5 MB
    cut, was_cut = bounded(text, 128)
    assert was_cut and len(cut) == 128 * 201
    tokenizer = load_tokenizer(tiny_export / "discriminator")
    kind = task_kind(TaskConfig(labels=["neg", "pos"]))
    kind.learn_labels([])
    [feature] = kind.encode([TaskExample((text,), "pos", "x")], tokenizer)
    assert len(feature.input_ids) == 128 and feature.truncated


def test_a_generator_export_and_an_unannounced_fine_tuned_model_are_refused(tiny_export, files, tmp_path):
    import shutil

    export = tmp_path / "export"
    shutil.copytree(tiny_export / "discriminator", export / "discriminator")
    shutil.copytree(tiny_export / "discriminator", export / "generator")
    config = json.loads((export / "generator" / "config.json").read_text())
    (export / "generator" / "config.json").write_text(json.dumps({**config, "architectures": ["ElectraForMaskedLM"]}))
    train, valid = files
    args = [f"task.train_files=[{train}]", f"task.validation_files=[{valid}]", "trainer.epochs=1"]
    with pytest.raises(ValueError, match="is the generator of an ELECTRA pair; fine-tune its discriminator"):
        finetune_in_process([f"model_path={export / 'generator'}", *args, f"output_dir={tmp_path / 'g'}"])
    finetune_in_process([f"model_path={tiny_export}", *args, f"output_dir={tmp_path / 'first'}"])
    with pytest.raises(ValueError, match="fine-tuned as ElectraForSequenceClassification; .*from_fine_tuned=true"):
        finetune_in_process([f"model_path={tmp_path / 'first' / 'model'}", *args, f"output_dir={tmp_path / 'x'}"])
    second = finetune_in_process(
        [
            f"model_path={tmp_path / 'first' / 'model'}",
            "from_fine_tuned=true",
            *args,
            f"output_dir={tmp_path / 'second'}",
        ]
    )
    assert second["started_from"] == {"architecture": "ElectraForSequenceClassification", "fine_tuned": True}


def test_a_folder_never_mixes_two_runs(tiny_export, files, tmp_path):
    out = tmp_path / "out"
    finetune_in_process([*common(tiny_export, files), "seeds=[0,1]", "trainer.epochs=1", f"output_dir={out}"])
    assert (out / "seed_1").is_dir()
    train = write_conll(tmp_path / "t.conll", 20, seed=4)
    finetune_in_process(
        [
            f"model_path={tiny_export}",
            "task=token_classification",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{train}]",
            "task.conll_tag_column=2",
            "trainer.epochs=1",
            f"output_dir={out}",
        ]
    )
    assert not (out / "seed_1").exists()
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # .lock: the run lock's file
    assert names == ["config.yaml", "model", "predictions", "results.json", "seed_0"]
    assert "tokens" in predictions(out)[0]


def test_mnli_matched_and_mismatched_in_one_run_glue_files_and_swapped_pairs(tiny_export, tmp_path):
    rng = random.Random(7)

    def write(name: str, rows: int, labelled: bool = True) -> str:
        with open(tmp_path / name, "w", encoding="utf-8") as f:
            f.write("index\tsentence1\tsentence2" + ("\tgold_label" if labelled else "") + "\n")
            for i in range(rows):
                label = rng.choice(["entailment", "neutral", "contradiction"])
                a, b = labelled_sentence(rng, label == "entailment"), labelled_sentence(rng, label == "neutral")
                f.write(f"{i}\t{a}\t{b}" + (f"\t{label}" if labelled else "") + "\n")
        return str(tmp_path / name)

    out = tmp_path / "out"
    results = finetune_in_process(
        [
            f"model_path={tiny_export}",
            "task=mnli",
            f"task.train_files=[{write('t.tsv', 60)}]",
            f"task.validation_files=[{write('m.tsv', 20)}]",
            f"+task.extra_validation_files.validation_mismatched=[{write('mm.tsv', 24)}]",
            f"task.test_files=[{write('tm.tsv', 9, False)}]",
            f"+task.extra_test_files.test_mismatched=[{write('tmm.tsv', 7, False)}]",
            "task.swap_pairs=true",
            "trainer.epochs=1",
            f"output_dir={out}",
        ]
    )
    assert set(results["validation_mismatched"]) == {"accuracy"}
    assert "validation_mismatched/accuracy" in results["per_seed"][0]["evaluations"][0]
    assert results["per_seed"][0]["train_examples"] == 60  # 120 features: each pair also swapped
    for name, rows in (("MNLI-m", 9), ("MNLI-mm", 7)):
        lines = (out / "predictions" / f"{name}.tsv").read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == rows + 1
        assert all(line.split("\t")[1] in ("entailment", "neutral", "contradiction") for line in lines[1:])


@pytest.mark.slow
def test_sigterm_saves_the_seed_in_progress_and_a_rerun_finishes_it_exactly(tiny_export, files, tmp_path):
    train, valid = files
    args = [
        f"model_path={tiny_export}",
        f"task.train_files=[{train}]",
        f"task.validation_files=[{valid}]",
        *LEARNS,
        "seeds=[0,1]",
        "trainer.epochs=3",
        "logging=none",
    ]
    reference = tmp_path / "reference"
    finetune([*args, f"output_dir={reference}"])
    out = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "finetune.py"), *args, f"output_dir={out}"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # seed 1's first evaluation: seed 0 finished, seed 1 in progress
        if line.startswith("seed 1 step 10 epoch 1:"):
            process.send_signal(signal.SIGTERM)
            break
    process.stdout.read()
    assert process.wait(timeout=120) == 75
    assert (out / ".resume" / "current" / "loop.json").is_file() and not (out / "results.json").exists()
    resumed = finetune([*args, f"output_dir={out}"])
    assert "resuming: seed(s) [0] finished earlier" in resumed.stdout and "seed 1: resumed at step" in resumed.stdout
    expected, got = (json.loads((d / "results.json").read_text()) for d in (reference, out))
    assert untimed(got["per_seed"]) == untimed(expected["per_seed"]) and not (out / ".resume").exists()
    assert predictions(out) == predictions(reference)


def test_a_model_that_predicts_one_class_is_flagged():
    from electra_pretrain.finetune.kinds import Prediction

    kind = task_kind(TaskConfig(labels=["ham", "spam"]))
    assert "predicts 'ham' for every one of the 3 examples" in kind.degenerate([Prediction("ham")] * 3)
    assert kind.degenerate([Prediction("ham"), Prediction("spam")]) is None


def untimed(seeds: list[dict]) -> list[dict]:
    """Seed summaries without the throughput figures (wall clock differs from run to run)."""

    def strip(row: dict) -> dict:
        return {k: v for k, v in row.items() if k != "train_examples_per_s"}

    return [{**strip(s), "evaluations": [strip(e) for e in s["evaluations"]]} for s in seeds]
