#!/usr/bin/env bash
# Create .venv-bench-ragas with Ragas for benchmarks/evals_scoring.py (one command, from the repo root).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench-ragas
.venv-bench-ragas/bin/pip install -q --upgrade pip
.venv-bench-ragas/bin/pip install -q -r benchmarks/requirements-ragas.txt
.venv-bench-ragas/bin/python -c "import ragas; print('ragas', ragas.__version__)"
