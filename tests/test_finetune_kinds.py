"""Question answering, multiple choice and `electra-pretrain predict`: each on small generated data, metrics checked
against values computed independently, exports loaded in transformers with nothing missing or left over."""

import json
import subprocess
import sys

import pytest
import torch

from electra_pretrain.finetune.config import TaskConfig
from electra_pretrain.finetune.kinds import task_kind
from electra_pretrain.finetune.metrics import answer_f1, normalize_answer, squad_scores
from electra_pretrain.finetune.readers import TaskExample
from electra_pretrain.tokenizer import load_tokenizer

from .helpers.corpora import squad_document, write_classification_csv, write_conll, write_swag_csv
from .helpers.finetune_runs import finetune_in_process, predictions
from .helpers.runs import ENV

QA = [
    "task=squad",
    "task.max_length=48",
    "task.doc_stride=16",
    "task.max_query_length=12",
    "trainer.epochs=4",
    "trainer.batch_size=16",
    "optim.lr=3e-3",
    "optim.layerwise_lr_decay=1.0",
]


def test_official_squad_normalisation_and_scores():
    assert normalize_answer("The  Eiffel, tower!") == "eiffel tower"
    assert answer_f1("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 3) * (2 / 2) / (2 / 3 + 1))
    scores = squad_scores([["Paris", "paris city"], ["Rome"], []], ["paris", "the rome!", "oslo"])
    assert scores["exact_match"] == pytest.approx(200 / 3) and scores["f1"] == pytest.approx(200 / 3)
    # no-answer scores: answering only below the threshold 0.5 recovers the unanswerable third question
    with_na = squad_scores([["Paris"], ["Rome"], []], ["paris", "rome", "oslo"], no_answer=[0.1, 0.2, 0.9])
    assert with_na["exact_match"] == pytest.approx(200 / 3)
    assert with_na["best_exact_match"] == pytest.approx(100.0) and with_na["best_f1_threshold"] == 0.2


def test_long_contexts_become_windows_and_the_answer_is_located_in_each(tiny_export):
    tokenizer = load_tokenizer(tiny_export / "discriminator")
    task = TaskConfig(
        name="qa", kind="question_answering", max_length=40, doc_stride=8, max_query_length=10, metrics=["f1"]
    )
    kind = task_kind(task)
    context = "winter " * 50 + "the capital is paris . " + "summer " * 5
    start = context.index("paris")
    example = TaskExample(("what is the capital ?", context), [("paris", start)], "x", "q1")
    features = kind.encode([example], tokenizer)
    assert len(features) > 2 and all(f.example == 0 for f in features)
    holding = [f for f in features if f.label != (0, 0)]
    assert holding, "some window holds the answer"
    for f in holding:
        first, last = f.label
        assert context[f.offsets[first][0] : f.offsets[last][1]] == "paris"
    assert all(len(f.input_ids) <= 40 for f in features)
    # the best span over the windows is found from made-up logits that point at the answer in one window
    window = holding[0]
    outputs = [[[0.0, 0.0] for _ in f.input_ids] for f in features]
    outputs[window.index][window.label[0]][0] = 5.0
    outputs[window.index][window.label[1]][1] = 5.0
    [prediction] = kind.predictions([example], features, outputs)
    assert prediction.value == "paris"


@pytest.mark.parametrize("version", ["squad", "squad_v2"])
def test_question_answering_learns_scores_officially_and_loads_in_transformers(tiny_export, tmp_path, version):
    from transformers import ElectraForQuestionAnswering, ElectraTokenizerFast

    impossible = 0.3 if version == "squad_v2" else 0.0
    for name, n, seed in (("train.json", 240, 1), ("dev.json", 40, 2)):
        (tmp_path / name).write_text(json.dumps(squad_document(n, seed, impossible, long_every=5)))
    out = tmp_path / "out"
    results = finetune_in_process(
        [
            f"model_path={tiny_export}",
            *QA,
            f"task={version}",
            f"task.train_files=[{tmp_path / 'train.json'}]",
            f"task.validation_files=[{tmp_path / 'dev.json'}]",
            f"output_dir={out}",
        ]
    )
    answers = json.loads((out / "predictions" / "validation.json").read_text())
    dev = squad_document(40, 2, impossible, long_every=5)
    golds = {qa["id"]: [a["text"] for a in qa["answers"]] for p in dev["data"][0]["paragraphs"] for qa in p["qas"]}
    assert answers.keys() == golds.keys()
    expected = squad_scores([golds[k] for k in answers], list(answers.values()))
    assert results["validation"]["exact_match"] == pytest.approx(expected["exact_match"])
    assert results["validation"]["f1"] == pytest.approx(expected["f1"])
    assert results["validation"]["f1"] >= 50, results["validation"]  # the capital is found (chance: near 0)

    model, info = ElectraForQuestionAnswering.from_pretrained(out / "model", output_loading_info=True)
    assert not any(info.values()), info
    # transformers' own tokenizer and model, and the post-processing of its run_qa example (utils_qa), give the run's
    # answers on every question, several windows included
    reference = reference_answers(
        model.eval(), ElectraTokenizerFast.from_pretrained(out / "model"), dev, version_2=impossible > 0
    )
    assert reference == answers


def reference_answers(model, tokenizer, document: dict, version_2: bool) -> dict[str, str]:
    """transformers' examples/pytorch/question-answering: prepare_validation_features, then
    utils_qa.postprocess_qa_predictions (n-best 20, answers up to 30 tokens, null threshold 0). The question is first cut
    to its first 12 tokens (task.max_query_length in QA), as google-research/electra does; run_qa has no such limit."""
    answers = {}
    for paragraph in document["data"][0]["paragraphs"]:
        context = paragraph["context"]
        for qa in paragraph["qas"]:
            question_offsets = tokenizer(qa["question"], add_special_tokens=False, return_offsets_mapping=True)
            question = qa["question"][: question_offsets["offset_mapping"][:12][-1][1]]
            encoded = tokenizer(
                question,
                context,
                truncation="only_second",
                max_length=48,
                stride=16,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                padding=True,
                return_tensors="pt",
            )
            offsets = [
                [span if sequence == 1 else None for span, sequence in zip(row, encoded.sequence_ids(i))]
                for i, row in enumerate(encoded["offset_mapping"].tolist())
            ]
            with torch.no_grad():
                out = model(
                    input_ids=encoded["input_ids"],
                    attention_mask=encoded["attention_mask"],
                    token_type_ids=encoded["token_type_ids"],
                )
            candidates, null = [], None
            for starts, ends, mapping in zip(out.start_logits.tolist(), out.end_logits.tolist(), offsets):
                null = starts[0] + ends[0] if null is None else min(null, starts[0] + ends[0])
                for s in sorted(range(len(starts)), key=lambda i: -starts[i])[:20]:
                    for e in sorted(range(len(ends)), key=lambda i: -ends[i])[:20]:
                        if mapping[s] is None or mapping[e] is None or e < s or e - s + 1 > 30:
                            continue
                        candidates.append((starts[s] + ends[e], context[mapping[s][0] : mapping[e][1]]))
            score, text = max(candidates, key=lambda c: c[0])
            answers[qa["id"]] = "" if version_2 and null - score > 0.0 else text
    return answers


def test_multiple_choice_learns_and_loads_in_transformers(tiny_export, tmp_path):
    from transformers import ElectraForMultipleChoice

    train, valid = write_swag_csv(tmp_path / "train.csv", 200, 1), write_swag_csv(tmp_path / "valid.csv", 40, 2)
    out = tmp_path / "out"
    results = finetune_in_process(
        [
            f"model_path={tiny_export}",
            "task=swag",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{valid}]",
            "trainer.epochs=6",
            "trainer.batch_size=16",
            "optim.lr=3e-3",
            "optim.layerwise_lr_decay=1.0",
            "task.max_length=32",
            f"output_dir={out}",
        ]
    )
    rows = predictions(out)
    assert results["validation"]["accuracy"] == pytest.approx(sum(r["prediction"] == r["label"] for r in rows) / 40)
    assert results["validation"]["accuracy"] >= 0.9, results  # the ending with "summer" (chance: 0.25)
    model, info = ElectraForMultipleChoice.from_pretrained(out / "model", output_loading_info=True)
    assert not any(info.values()), info
    from electra_pretrain.finetune.predict import load_fine_tuned

    kind, ours = load_fine_tuned(out / "model")
    tokenizer = load_tokenizer(out / "model")
    [feature] = kind.encode(kind.read_file(valid, "csv", "validation")[:1], tokenizer)
    collated = kind.collate(0)([feature])
    inputs = {k: collated[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**inputs).logits, ours(**inputs), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classification", "token_classification", "question_answering", "multiple_choice"])
def test_predict_gives_the_fine_tunes_own_predictions(tiny_export, tmp_path, kind):
    if kind == "classification":
        valid = write_classification_csv(tmp_path / "valid.csv", 30, seed=2)
        args = ["task=classification", f"task.train_files=[{write_classification_csv(tmp_path / 't.csv', 60, 1)}]"]
    elif kind == "token_classification":
        valid = write_conll(tmp_path / "valid.conll", 20, seed=5, long_sentence=40)
        args = [
            "task=token_classification",
            f"task.train_files=[{write_conll(tmp_path / 't.conll', 40, 4)}]",
            "task.conll_tag_column=2",
            "task.max_length=32",
        ]
    elif kind == "question_answering":
        valid = tmp_path / "dev.json"
        valid.write_text(json.dumps(squad_document(20, 2, long_every=4)))
        (tmp_path / "t.json").write_text(json.dumps(squad_document(40, 1)))
        args = [*QA[:4], f"task.train_files=[{tmp_path / 't.json'}]"]
    else:
        valid = write_swag_csv(tmp_path / "valid.csv", 20, 2)
        args = ["task=swag", f"task.train_files=[{write_swag_csv(tmp_path / 't.csv', 40, 1)}]", "task.max_length=32"]
    out = tmp_path / "out"
    finetune_in_process(
        [
            f"model_path={tiny_export}",
            *args,
            f"task.validation_files=[{valid}]",
            "trainer.epochs=1",
            f"output_dir={out}",
        ]
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_pretrain",
            "predict",
            str(out / "model"),
            str(valid),
            "--out",
            str(tmp_path / "p.jsonl"),
            "--batch-size",
            "7",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ours = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    theirs = predictions(out)
    assert [r["prediction"] for r in ours] == [r["prediction"] for r in theirs]
    for a, b in zip(ours, theirs):
        if "probabilities" in a:
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
