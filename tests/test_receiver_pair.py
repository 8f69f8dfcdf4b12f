"""Two ``ragtrail serve`` processes into one PostgreSQL (issue 16): senders spread across both, one
receiver stopped (SIGTERM) and restarted mid-load → every span acknowledged with 200 is stored exactly
once. Real receivers in their own processes, real OTLP/HTTP, the real PostgreSQL server."""

from __future__ import annotations

import signal

import pytest

from benchmarks.receiver_pair import run_load


@pytest.mark.slow
def test_receiver_pair_restart_mid_load_stores_every_acked_span_once(pg_url) -> None:  # type: ignore[no-untyped-def]
    r = run_load(pg_url, receivers=2, senders=3, spans_per_sender=4_000, batch=200, restart_at=0.4,
                 sig=signal.SIGTERM)  # fmt: skip
    assert r["restart"]["exit_code"] == 0  # a graceful stop: queued spans written before exit
    assert r["acked_spans"] == r["spans_sent"] == 12_000
    assert r["stored"] == r["stored_distinct"] == 12_000  # every acknowledged span, once
    assert len(r["by_port"]) == 2 and min(r["by_port"].values()) > 0  # both receivers took load
    assert r["retries"] > 0  # batches refused during the restart went to the other receiver
