"""An installed wheel trains and fine-tunes from any directory; every command-line option explains itself."""

import argparse
import json
import subprocess
import sys
import zipfile

import pytest

from electra_pretrain.cli import build_parser

from .helpers.runs import ENV, ROOT, overrides


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """The project's wheel, built as pip builds it and unpacked as an installer would lay it out."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(folder / "dist"),
        ],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=300,
    )
    wheel = next((folder / "dist").glob("electra_pretrain-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(folder / "site")
    assert {
        "electra_pretrain/configs/pretrain/train.yaml",
        "electra_pretrain/configs/pretrain/model/tiny.yaml",
        "electra_pretrain/configs/finetune/finetune.yaml",
        "electra_pretrain/configs/finetune/task/cola.yaml",
        "electra_pretrain/finetune/kinds/classification.py",
    } <= set(names)
    return folder / "site"


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry", [("-m", "electra_pretrain.pretrain.app"), ("-m", "electra_pretrain", "train")], ids=["module", "cli"]
)
def test_the_wheel_trains_from_another_directory(corpus, wheel_site, tmp_path, entry):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, *entry, *overrides(corpus, out, "trainer.max_steps=2")],
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": str(wheel_site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "export" / "discriminator" / "model.safetensors").is_file()
    assert "configs" not in {p.name for p in tmp_path.iterdir()}  # nothing borrowed from a checkout
    version = subprocess.run(
        [sys.executable, "-m", "electra_pretrain", "--version"], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert version.stdout.startswith("electra-pretrain 0.1")


@pytest.mark.slow
def test_the_wheel_fine_tunes_from_another_directory(tiny_export, wheel_site, tmp_path):
    from .helpers.corpora import write_classification_csv

    train = write_classification_csv(tmp_path / "train.csv", 40, seed=1)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra_pretrain",
            "finetune",
            f"model_path={tiny_export}",
            "task=sst2",
            "task.text_fields=[text]",
            "task.labels=[neg,pos]",
            f"task.train_files=[{train}]",
            f"task.validation_files=[{train}]",
            "trainer.epochs=1",
            f"output_dir={out}",
            "logging=none",
        ],
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": str(wheel_site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["task"] == "sst2"  # the preset, from the wheel


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield parser.prog, action


def test_every_command_line_option_has_a_help_line():
    missing = [f"{prog} {action.dest}" for prog, action in _options(build_parser()) if not action.help]
    assert not missing


def test_the_layers_contract_names_every_module_of_the_core():
    """A core module left out of the contract would sit in no layer, and `make lint` would not check its imports."""
    import tomllib

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = settings["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    package = ROOT / "electra_pretrain"
    core = {f"electra_pretrain.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"}
    wings = {f"electra_pretrain.{path.name}" for path in package.iterdir() if (path / "__init__.py").exists()}
    assert core | wings == named


def test_the_wheel_lists_every_package():
    import tomllib

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(settings["tool"]["setuptools"]["packages"]) - {"electra_pretrain.configs"}
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "electra_pretrain").rglob("__init__.py")}
    assert found == listed
