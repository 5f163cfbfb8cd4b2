"""Fine-tuning inputs: reading task files, label checks, the encoder's weights from a folder, layer-wise decay."""

import pytest
import torch

from electra_pretrain.finetune.config import TaskConfig
from electra_pretrain.finetune.data import read_split
from electra_pretrain.finetune.kinds import task_kind
from electra_pretrain.finetune.models import ElectraForSequenceClassification, build_task_model
from electra_pretrain.finetune.readers import TaskExample
from electra_pretrain.modeling import ElectraDiscriminator
from electra_pretrain.optim import layerwise_parameter_groups
from electra_pretrain.tokenizer import load_tokenizer

from .helpers.corpora import tiny_config


def read(task: TaskConfig, split: str, path) -> list[TaskExample]:
    return read_split(task_kind(task), task, split, [str(path)])


def test_csv_fields_stay_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\nNA,007\n"a, quoted ""one""",1\n,2\n')
    examples = read(TaskConfig(), "train", path)
    assert [(e.texts, e.label) for e in examples] == [(("NA",), "007"), (('a, quoted "one"',), "1"), (("",), "2")]
    assert examples[1].source == f"{path}:2"
    path.write_bytes(b"\xef\xbb\xbftext,label\nsummer,pos\n")  # a spreadsheet's byte-order mark
    assert [(e.texts, e.label) for e in read(TaskConfig(), "train", path)] == [(("summer",), "pos")]


def test_a_missing_field_or_file_is_named(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: no 'label' field"):
        read(TaskConfig(), "train", path)
    assert read(TaskConfig(), "test", path)[1].label is None  # test files may lack labels
    with pytest.raises(FileNotFoundError, match="task.train_files: .*nothing.csv matches no file"):
        read(TaskConfig(), "train", tmp_path / "nothing.csv")


def test_layerwise_decay_groups_follow_the_original_depths():
    model = ElectraForSequenceClassification(tiny_config(num_hidden_layers=3), ["a", "b"])
    groups = layerwise_parameter_groups(model, lr=1.0, decay=0.5, weight_decay=0.01, num_layers=3)
    lr_of = {
        name: group["lr"]
        for name, p in model.named_parameters()
        for group in groups
        if any(p is q for q in group["params"])
    }
    assert len(lr_of) == len(list(model.parameters())) == sum(len(g["params"]) for g in groups)
    # depth 0 embeddings (and the projection), layer i at depth i + 1, the head at layers + 2: lr x 0.5^(5 - depth)
    assert lr_of["electra.embeddings.word_embeddings.weight"] == 0.5**5
    assert lr_of["electra.embeddings_project.weight"] == 0.5**5
    assert lr_of["electra.encoder.layer.0.attention.self.query.weight"] == 0.5**4
    assert lr_of["electra.encoder.layer.2.output.LayerNorm.bias"] == 0.5**2  # the top layer: decay^2
    assert lr_of["classifier.out_proj.weight"] == lr_of["classifier.dense.bias"] == 1.0
    for group in groups:
        names = [n for n, p in model.named_parameters() if any(p is q for q in group["params"])]
        excluded = [n.endswith("bias") or "LayerNorm" in n for n in names]
        assert all(excluded) if group["weight_decay"] == 0.0 else not any(excluded), names
    flat = layerwise_parameter_groups(model, lr=1.0, decay=1.0, weight_decay=0.01, num_layers=3)
    assert {g["lr"] for g in flat} == {1.0}


def test_the_encoder_comes_from_the_folder_and_pickles_only_as_plain_tensors(tiny_export, tmp_path):
    folder = tiny_export / "discriminator"
    tokenizer = load_tokenizer(folder)
    source = ElectraDiscriminator.from_pretrained(folder)
    model = build_task_model(
        ElectraForSequenceClassification, folder, tokenizer, ["a", "b"], None, "sdpa", pretrained=True
    )
    for key, value in source.electra.state_dict().items():
        assert torch.equal(model.electra.state_dict()[key], value), key

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    torch.save(source.state_dict(), pickled / "pytorch_model.bin")
    from_pickle = build_task_model(
        ElectraForSequenceClassification, pickled, tokenizer, ["a", "b"], None, "sdpa", pretrained=True
    )
    assert torch.equal(
        from_pickle.electra.embeddings.word_embeddings.weight, source.electra.embeddings.word_embeddings.weight
    )
    torch.save({"weights": source.state_dict(), "extra": TaskConfig()}, pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model.bin: refused by torch.load\(weights_only=True\)"):
        build_task_model(
            ElectraForSequenceClassification, pickled, tokenizer, ["a", "b"], None, "sdpa", pretrained=True
        )


def test_pairs_are_cls_a_sep_b_sep_and_the_longer_text_is_cut_first(tiny_export):
    tokenizer = load_tokenizer(tiny_export / "discriminator")
    kind = task_kind(TaskConfig(max_length=12, labels=["0", "1"]))
    short, long = "summer river", "the quick brown fox jumps over the lazy dog and more"
    examples = [TaskExample(("quick fox", "lazy dog"), "1", "x"), TaskExample((short, long), "0", "y")]
    kind.learn_labels(examples)
    pair, cut = kind.encode(examples, tokenizer)
    ids = [tokenizer.id_to_token(i) for i in pair.input_ids]
    assert ids[0] == "[CLS]" and ids.count("[SEP]") == 2 and ids[-1] == "[SEP]"
    first_sep = ids.index("[SEP]")
    assert pair.token_type_ids == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert (pair.label, pair.truncated) == (1, False)
    assert len(cut.input_ids) == 12 and cut.truncated
    kept_short = tokenizer.encode(short, add_special_tokens=False).ids
    assert cut.input_ids[1 : 1 + len(kept_short)] == kept_short  # the short text survives whole


def test_every_configured_task_kind_has_its_strategy_and_metrics():
    from electra_pretrain.finetune.config import TASK_KINDS
    from electra_pretrain.finetune.kinds import KINDS

    assert set(KINDS) == set(TASK_KINDS)
    for name, kind in KINDS.items():
        assert kind.name == name and kind.model_class.architecture.startswith("ElectraFor")


def test_a_stratified_subsample_is_seeded_proportional_and_keeps_every_class():
    from electra_pretrain.finetune.data import stratified_sample

    strata = ["ham"] * 690 + ["spam"] * 300 + ["rare"] * 10
    picked = stratified_sample(strata, 100, seed=3)
    assert len(picked) == len(set(picked)) == 100 and picked == sorted(picked)
    counts = {s: sum(strata[i] == s for i in picked) for s in ("ham", "spam", "rare")}
    assert counts == {"ham": 69, "spam": 30, "rare": 1}
    assert stratified_sample(strata, 100, seed=3) == picked and stratified_sample(strata, 100, seed=4) != picked
    small = stratified_sample(strata, 3, seed=0)  # fewer than proportion allows: one of each class
    assert sorted(strata[i] for i in small) == ["ham", "rare", "spam"]
    with pytest.raises(ValueError, match="task.max_train_examples=2 cannot hold one example of each of the 3 classes"):
        stratified_sample(strata, 2, seed=0)
