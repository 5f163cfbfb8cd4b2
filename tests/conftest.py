"""Shared fixtures: everything offline, CPU, seconds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from .helpers.corpora import write_blank_line_corpus  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps its state process-wide: an `Accelerator(cpu=True)` in one test would put every later test
    of this process on the CPU, and a precision once chosen refuses another. Each test starts from none."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Two text files in the original format, and one tokenizer (corpus.parent / "tokenizer") for every run."""
    from electra_pretrain.tokenizer import save_tokenizer, train_tokenizer

    folder = tmp_path_factory.mktemp("corpus")
    for i in range(2):
        write_blank_line_corpus(folder / f"part{i}.txt", documents=30, sentences=20, first_doc=30 * i)
    save_tokenizer(
        train_tokenizer((p.read_text() for p in sorted(folder.glob("*.txt"))), vocab_size=300, show_progress=False),
        folder.parent / "tokenizer",
    )
    return folder


@pytest.fixture(scope="session")
def uninterrupted(corpus, tmp_path_factory):
    """A 12-step run with checkpoints at 4, 8 and 12: the reference for resume tests."""
    from .helpers.runs import overrides, train

    out = tmp_path_factory.mktemp("runs") / "uninterrupted"
    train(overrides(corpus, out))
    return out


@pytest.fixture(scope="session")
def tiny_export(corpus, tmp_path_factory):
    """An export root (discriminator/: config.json, model.safetensors, tokenizer files) of a 2-layer x 32 model with
    random weights, on the corpus tokenizer: what fine-tuning starts from."""
    from electra_pretrain.modeling import ElectraDiscriminator
    from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer

    from .helpers.corpora import tiny_config

    tokenizer = load_tokenizer(corpus.parent / "tokenizer")
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = ElectraDiscriminator(
        tiny_config(
            vocab_size=tokenizer.get_vocab_size(),
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            intermediate_size=64,
        )
    )
    model.save_pretrained(root / "discriminator")
    save_tokenizer(tokenizer, root / "discriminator", model_max_length=64)
    return root
