"""The oldest and the newest OpenTelemetry SDK of the supported range (``>=1.27,<2`` in pyproject.toml)
run the core tracing and store tests: ``make test-otel-range`` builds a venv with only the base install
at each end of the range and runs them there (see the Makefile for the selection).

Needs the package index: skipped with the reason when it cannot be reached, a failure instead when
``RAGTRAIL_REQUIRE_OTEL_RANGE=1`` (CI can set it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OLDEST = "1.27.0"


def _range_floor() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'"opentelemetry-sdk>=([0-9.]+),<2"', text)
    assert m, "pyproject.toml no longer pins opentelemetry-sdk as >=X,<2: update this test and the Makefile"
    return m.group(1)


def _index_offers_the_oldest() -> bool:
    r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "opentelemetry-sdk"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    return r.returncode == 0 and OLDEST in r.stdout


def test_the_makefile_tests_the_floor_of_the_declared_range() -> None:
    """The oldest version the target installs is the floor pyproject.toml declares."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert OLDEST.startswith(_range_floor())
    assert f'"opentelemetry-sdk=={OLDEST}"' in makefile and f'"opentelemetry-api=={OLDEST}"' in makefile
    assert '"opentelemetry-sdk<2"' in makefile


@pytest.mark.slow
def test_oldest_and_newest_opentelemetry_sdk_run_the_core_tests() -> None:
    if shutil.which("make") is None or not _index_offers_the_oldest():
        if os.environ.get("RAGTRAIL_REQUIRE_OTEL_RANGE") == "1":
            pytest.fail(f"the package index does not offer opentelemetry-sdk {OLDEST} (or make is missing)")
        pytest.skip(f"the package index is unreachable or does not offer opentelemetry-sdk {OLDEST}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAGTRAIL_BASE_ONLY")}
    r = subprocess.run(["make", "-s", "test-otel-range", f"PYTHON={sys.executable}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert f"oldest: opentelemetry-api {OLDEST} opentelemetry-sdk {OLDEST}" in out, out[-3000:]
    newest = re.search(r"newest: opentelemetry-api (\S+) opentelemetry-sdk (\S+)", out)
    assert newest and newest.group(2).startswith("1."), out[-3000:]
    assert len(re.findall(r"\d+ passed", out)) == 2 and " failed" not in out, out[-3000:]
