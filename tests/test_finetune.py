"""Fine-tuning end to end: each task kind on small generated data, the outputs a user reads, transformers loading
the result, several seeds, two processes."""

import csv
import json
import random

import pytest
import torch

from .helpers.corpora import labelled_sentence, write_classification_csv, write_conll
from .helpers.finetune_runs import finetune, finetune_in_process, predictions
from .helpers.runs import TORCHRUN

# Enough steps for the tiny model to learn a one-word rule: 240 examples, batch 16, 6 epochs at 3e-3, no layer decay.
LEARNS = [
    "trainer.epochs=6",
    "trainer.batch_size=16",
    "optim.lr=3e-3",
    "optim.layerwise_lr_decay=1.0",
    "task.max_length=32",
]


@pytest.fixture(scope="module")
def classification_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classification")
    return (
        write_classification_csv(folder / "train.csv", 240, seed=1),
        write_classification_csv(folder / "valid.csv", 61, seed=2),
    )


@pytest.mark.slow
def test_the_contract_command_writes_results_predictions_and_a_model_transformers_loads(
    tiny_export, classification_files, tmp_path
):
    from transformers import ElectraForSequenceClassification, ElectraTokenizerFast

    train, valid = classification_files
    out = tmp_path / "out"
    finetune(
        [
            f"model_path={tiny_export}",
            "task=classification",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{valid}]",
            "task.text_fields=[text]",
            "task.label_field=label",
            "trainer.epochs=2",
            "trainer.batch_size=32",
            "optim.lr=1e-4",
            "seed=0",
            f"output_dir={out}",
            "logging=none",
        ]
    )
    results = json.loads((out / "results.json").read_text())
    rows = predictions(out)
    assert [r["index"] for r in rows] == list(range(61))
    gold = [row["label"] for row in csv.DictReader(open(valid))]
    assert [r["label"] for r in rows] == gold
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert results["validation"]["accuracy"] == pytest.approx(accuracy)
    assert [s["seed"] for s in results["per_seed"]] == [0] and len(results["per_seed"][0]["evaluations"]) == 2
    assert results["selection"].startswith("last")

    # The kept model, loaded by transformers with nothing missing or left over, predicts what predictions/ says.
    model, info = ElectraForSequenceClassification.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.id2label == {0: "neg", 1: "pos"}
    card = (out / "model" / "README.md").read_text()
    assert "ElectraForSequenceClassification" in card and f"accuracy {accuracy:.4f}" in card
    tokenizer = ElectraTokenizerFast.from_pretrained(out / "model")
    texts = [row["text"] for row in csv.DictReader(open(valid))]
    with torch.no_grad():
        probabilities = model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    expected = torch.tensor([[r["probabilities"]["neg"], r["probabilities"]["pos"]] for r in rows])
    torch.testing.assert_close(probabilities, expected, atol=2e-5, rtol=0)


def test_classification_learns_and_seeds_are_independent_and_repeatable(tiny_export, classification_files, tmp_path):
    train, valid = classification_files
    common = [f"model_path={tiny_export}", f"task.train_files=[{train}]", f"task.validation_files=[{valid}]", *LEARNS]
    both = finetune_in_process([*common, "seeds=[0,1]", f"output_dir={tmp_path / 'both'}"])
    alone = finetune_in_process([*common, "seed=1", f"output_dir={tmp_path / 'alone'}"])
    assert [s["seed"] for s in both["per_seed"]] == [0, 1] and both["per_seed"][0]["train_examples"] == 240
    scores = [s["validation"]["accuracy"] for s in both["per_seed"]]
    assert min(scores) >= 0.9, scores  # the marker word is learnt (chance: about 0.5)
    assert both["validation"]["accuracy"] == pytest.approx(sorted(scores)[0] / 2 + sorted(scores)[1] / 2)
    assert both["validation_mean"]["accuracy"] == pytest.approx(sum(scores) / 2)
    # seed 1 gives the same losses and scores run alone as after seed 0 in the same process
    last_loss = [run["per_seed"][-1]["evaluations"][-1]["train_loss"] for run in (alone, both)]
    assert last_loss[0] == last_loss[1]
    assert alone["per_seed"][0]["validation"] == both["per_seed"][1]["validation"]
    kept = max(both["per_seed"], key=lambda s: s["validation"]["accuracy"])
    assert both["kept_seed"] == kept["seed"]
    evaluations = kept["evaluations"]
    assert kept["validation"]["accuracy"] == evaluations[-1]["validation/accuracy"]  # trainer.keep=last, the default
    assert kept["kept_epoch"] == 6 and [e["epoch"] for e in evaluations] == [1, 2, 3, 4, 5, 6]


def test_a_randomly_initialised_model_of_the_same_shape_is_the_baseline(tiny_export, classification_files, tmp_path):
    from safetensors.torch import load_file

    train, valid = classification_files
    args = [
        f"model_path={tiny_export}",
        f"task.train_files=[{train}]",
        f"task.validation_files=[{valid}]",
        "trainer.epochs=1",
        "optim.lr=1e-9",
        "optim.warmup_share=0",
    ]
    finetune_in_process([*args, f"output_dir={tmp_path / 'pre'}"])
    finetune_in_process([*args, "model_init=random", f"output_dir={tmp_path / 'random'}"])
    source = load_file(tiny_export / "discriminator" / "model.safetensors")
    pretrained, fresh = (load_file(tmp_path / name / "model" / "model.safetensors") for name in ("pre", "random"))
    key = "electra.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(pretrained[key], source[key], atol=1e-6)  # lr 1e-9: still the pretrained weights
    assert not torch.allclose(fresh[key], source[key], atol=1e-3)
    assert fresh[key].shape == source[key].shape


def test_sentence_pair_regression_scores_pearson_and_spearman(tiny_export, tmp_path):
    from transformers import ElectraForSequenceClassification

    from electra_pretrain.finetune.metrics import pearson, spearman

    rng = random.Random(3)
    for name, rows in (("train.tsv", 120), ("dev.tsv", 40)):
        with open(tmp_path / name, "w", encoding="utf-8") as f:
            f.write("index\tsentence1\tsentence2\tscore\n")
            for i in range(rows):
                a = labelled_sentence(rng, rng.random() < 0.5)
                b = labelled_sentence(rng, rng.random() < 0.5)
                # an unbalanced quote: GLUE's files have them, and a quoting csv reader would swallow lines
                f.write(f'{i}\t"{a}\t{b}\t{2.5 * ((" summer" in " " + a) + (" summer" in " " + b))}\n')
    out = tmp_path / "out"
    results = finetune_in_process(
        [
            f"model_path={tiny_export}",
            "task=stsb",
            f"task.train_files=[{tmp_path}/train.tsv]",
            f"task.validation_files=[{tmp_path}/dev.tsv]",
            "trainer.epochs=2",
            f"output_dir={out}",
        ]
    )
    rows = predictions(out)
    assert len(rows) == 40 and rows[0]["label"] in (0.0, 2.5, 5.0)
    gold, predicted = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert results["validation"]["pearson"] == pytest.approx(pearson(gold, predicted))
    assert results["validation"]["spearman"] == pytest.approx(spearman(gold, predicted))
    assert results["metric"] == "spearman" and len(results["per_seed"][0]["evaluations"]) == 2  # epochs beats 10
    model, info = ElectraForSequenceClassification.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.problem_type == "regression" and model.config.num_labels == 1


def test_token_classification_from_conll_and_jsonl(tiny_export, tmp_path):
    from transformers import ElectraForTokenClassification

    from electra_pretrain.finetune.metrics import span_scores

    train = write_conll(tmp_path / "train.conll", 160, seed=4)
    valid = write_conll(tmp_path / "valid.conll", 30, seed=5, long_sentence=40)
    out = tmp_path / "conll"
    results = finetune_in_process(
        [
            f"model_path={tiny_export}",
            "task=token_classification",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{valid}]",
            "task.conll_tag_column=2",
            *LEARNS,
            f"output_dir={out}",
        ]
    )
    rows = predictions(out)
    assert len(rows) == 31 and rows[0]["tokens"][0] != "-DOCSTART-"
    long = rows[-1]
    assert len(long["prediction"]) == 40 and long["prediction"][-1] is None  # cut off by max_length 32: not scored
    kept = [[t for t in r["prediction"] if t is not None] for r in rows]
    expected = span_scores([r["tags"][: len(k)] for r, k in zip(rows, kept)], kept)
    assert results["validation"]["span_f1"] == pytest.approx(expected["span_f1"])
    assert results["validation"]["span_f1"] >= 0.9, results["validation"]  # chunks found, "river" continued
    model, info = ElectraForTokenClassification.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert set(model.config.id2label.values()) == {"B-SEASON", "I-SEASON", "O"}

    # The same sentences as JSON lines with token and tag lists give the same examples and the same run.
    for name, source in (("train", train), ("valid", valid)):
        sentences = [block.splitlines() for block in source.read_text().split("\n\n")[1:] if block.strip()]
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for lines in sentences:
                f.write(
                    json.dumps(
                        {"tokens": [line.split()[0] for line in lines], "tags": [line.split()[2] for line in lines]}
                    )
                    + "\n"
                )
    from_json = finetune_in_process(
        [
            f"model_path={tiny_export}",
            "task=token_classification",
            f"task.train_files=[{tmp_path}/train.jsonl]",
            f"task.validation_files=[{tmp_path}/valid.jsonl]",
            *LEARNS,
            f"output_dir={tmp_path / 'json'}",
        ]
    )
    assert from_json["validation"] == results["validation"]


def test_glue_cola_files_without_a_header_and_a_test_file_to_predict(tiny_export, tmp_path):
    rng = random.Random(6)
    for name, rows in (("train.tsv", 80), ("dev.tsv", 30)):
        with open(tmp_path / name, "w", encoding="utf-8") as f:
            for _ in range(rows):
                positive = rng.random() < 0.5
                f.write(f'gj04\t{int(positive)}\t\t{labelled_sentence(rng, positive)} "quoted\n')
    with open(tmp_path / "test.tsv", "w", encoding="utf-8") as f:
        f.write("index\tsentence\n" + "".join(f"{i}\t{labelled_sentence(rng, True)}\n" for i in range(12)))
    out = tmp_path / "out"
    results = finetune_in_process(
        [
            f"model_path={tiny_export}",
            "task=cola",
            f"task.train_files=[{tmp_path}/train.tsv]",
            f"task.validation_files=[{tmp_path}/dev.tsv]",
            f"task.test_files=[{tmp_path}/test.tsv]",
            "trainer.epochs=1",
            f"output_dir={out}",
        ]
    )
    assert set(results["validation"]) == {"matthews", "accuracy"} and "test" not in results  # test: no labels
    assert len(predictions(out)) == 30
    test = predictions(out, "test")
    assert [r["index"] for r in test] == list(range(12)) and all("label" not in r for r in test)
    assert all(r["prediction"] in ("0", "1") for r in test)


@pytest.mark.slow
def test_bad_input_is_named_in_one_line(tiny_export, classification_files, tmp_path):
    train, valid = classification_files
    odd = tmp_path / "valid.csv"
    odd.write_text(valid.read_text() + "99,summer river,maybe\n")
    result = finetune(
        [
            f"model_path={tiny_export}",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{odd}]",
            f"output_dir={tmp_path / 'out'}",
            "logging=none",
        ],
        check=False,
    )
    assert result.returncode == 1
    assert f"{odd}:62: label 'maybe' (validation) is not one of ['neg', 'pos']" in result.stderr

    result = finetune(
        [
            f"model_path={tiny_export}",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{valid}]",
            "task.text_fields=[sentence]",
            f"output_dir={tmp_path / 'out'}",
            "logging=none",
        ],
        check=False,
    )
    assert result.returncode == 1 and "names none of the fields ['sentence']" in result.stderr
    assert str(train) in result.stderr

    result = finetune(
        [
            f"model_path={tiny_export}",
            "task.hub=glue",
            "task.hub_config=sst2",
            f"output_dir={tmp_path / 'out'}",
            "logging=none",
        ],
        check=False,
    )
    assert result.returncode == 1 and "task.hub=glue" in result.stderr and "offline" in result.stderr.lower()


@pytest.mark.slow
def test_two_processes_predict_every_validation_example_once(tiny_export, classification_files, tmp_path):
    train, valid = classification_files  # 61 validation examples: the last batch is uneven over 2 processes
    out = tmp_path / "out"
    finetune(
        [
            f"model_path={tiny_export}",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{valid}]",
            "trainer.epochs=1",
            "trainer.eval_batch_size=8",
            f"output_dir={out}",
            "logging=none",
        ],
        launcher=(*TORCHRUN, "--master_port", "29571"),
        env={"ACCELERATE_USE_CPU": "1"},
    )
    rows = predictions(out)
    assert [r["index"] for r in rows] == list(range(61))
    results = json.loads((out / "results.json").read_text())
    assert results["validation"]["accuracy"] == pytest.approx(sum(r["prediction"] == r["label"] for r in rows) / 61)


def test_max_train_examples_trains_each_seed_on_its_own_stratified_subsample(
    tiny_export, classification_files, tmp_path
):
    train, valid = classification_files
    common = [f"model_path={tiny_export}", f"task.train_files=[{train}]", f"task.validation_files=[{valid}]"]
    results = finetune_in_process(
        [*common, "task.max_train_examples=20", "seeds=[0,1]", "trainer.epochs=1", f"output_dir={tmp_path / 'a'}"]
    )
    assert [s["train_examples"] for s in results["per_seed"]] == [20, 20]
    losses = [s["evaluations"][0]["train_loss"] for s in results["per_seed"]]
    fixed = finetune_in_process(
        [
            *common,
            "task.max_train_examples=20",
            "task.subsample_seed=0",
            "seed=1",
            "trainer.epochs=1",
            f"output_dir={tmp_path / 'b'}",
        ]
    )
    assert fixed["per_seed"][0]["evaluations"][0]["train_loss"] != losses[1]  # seed 1 on seed 0's subsample
