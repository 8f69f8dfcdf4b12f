"""The public connector API (ragtrail.tracing) and the shape every connector package has."""

from __future__ import annotations

import importlib
import logging

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.tracing import FailureCounter, start_span

SHAPED = ["langchain", "llama_index", "chroma", "sentence_transformers", "transformers", "vllm", "openai"]


@pytest.mark.parametrize("name", SHAPED)
def test_every_connector_package_has_the_same_exports(name: str) -> None:
    mod = importlib.import_module(f"ragtrail.connectors.{name}")
    assert {"Instrumentor", "instrument", "uninstrument", "failures"} <= set(mod.__all__)
    assert isinstance(mod.failures(), int)
    assert mod.Instrumentor().instrumentation_dependencies()  # the declared supported range


def test_the_failure_guard_counts_logs_once_and_never_raises(caplog) -> None:  # type: ignore[no-untyped-def]
    counter = FailureCounter("test-guard", "the test connector")

    @counter.guard("the answer", default="fallback")
    def extract(x: int) -> str:
        if x < 0:
            raise ValueError("bad input")
        return str(x)

    with caplog.at_level(logging.DEBUG, logger="ragtrail"):
        assert extract(1) == "1"
        assert [extract(-1), extract(-2), extract(-3)] == ["fallback"] * 3
    assert counter.count() == 3
    logged = [r for r in caplog.records if "could not record the answer" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_start_span_sets_the_kind_and_is_a_no_op_before_init(traced) -> None:  # type: ignore[no-untyped-def]
    span = start_span("retrieve docs", semconv.RETRIEVER, {"db.system": "x"})
    span.end()
    (s,) = traced.by_name("retrieve docs")
    assert s.attributes[semconv.SPAN_KIND] == semconv.RETRIEVER and s.attributes["db.system"] == "x"
    ragtrail.shutdown()
    assert not start_span("after shutdown", semconv.TOOL).is_recording()


def test_a_failing_langchain_callback_is_counted_in_the_connectors_failures(traced, caplog) -> None:  # type: ignore[no-untyped-def]
    """A callback that fails inside the handler is counted in ``connectors.langchain.failures()``
    (as in every other connector), logged once, and never raised into LangChain."""
    import uuid

    from ragtrail.connectors import langchain as rt_langchain

    class HostileMetadata(dict):  # type: ignore[type-arg]
        def get(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("metadata that cannot be read")

    handler = rt_langchain.CallbackHandler()
    before = rt_langchain.failures()
    with caplog.at_level(logging.DEBUG, logger="ragtrail"):
        for _ in range(2):
            handler.on_chain_start({}, {"q": 1}, run_id=uuid.uuid4(), metadata=HostileMetadata(x=1))
    assert rt_langchain.failures() == before + 2
    assert handler.errors == 2
    logged = [r for r in caplog.records if "LangChain handler could not record on_chain_start" in r.getMessage()]
    assert len(logged) <= 1  # logged once per kind in the process (an earlier test may have used it up)
