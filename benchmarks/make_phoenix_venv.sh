#!/usr/bin/env bash
# Create .venv-phoenix (Arize Phoenix + its client) for tests/test_phoenix.py. About 1.5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
test -x .venv-phoenix/bin/python || "$PYTHON" -m venv .venv-phoenix
.venv-phoenix/bin/pip install -q --upgrade pip
.venv-phoenix/bin/pip install -q -r benchmarks/requirements-phoenix.txt
.venv-phoenix/bin/python -c "import phoenix, phoenix.client; print('phoenix', phoenix.__version__)"
