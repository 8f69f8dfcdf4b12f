"""How the Ray backend hands the store URL to its workers: never with the password in it."""

from __future__ import annotations

import pytest

from ragtrail.evals._ray import _is_loopback, _split_password, _with_password


@pytest.mark.parametrize(
    ("url", "bare", "secret"),
    [
        ("postgresql://app:p%40ss@db:5432/evals?options=-csearch_path%3Dx", "postgresql://app@db:5432/evals?options=-csearch_path%3Dx", "p@ss"),
        ("postgresql://app@db/evals?sslmode=require&password=zz", "postgresql://app@db/evals?sslmode=require", "zz"),
        ("postgresql://app@db/evals", "postgresql://app@db/evals", None),
        ("/home/me/.ragtrail/ragtrail.db", "/home/me/.ragtrail/ragtrail.db", None),
    ],
)  # fmt: skip
def test_the_password_is_taken_out_of_the_url_and_put_back_on_the_worker(
    url: str, bare: str, secret: str | None
) -> None:
    assert _split_password(url) == (bare, secret)
    if secret is not None:
        assert secret not in bare
        back = _with_password(bare, secret)
        assert _split_password(back) == (bare, secret)


@pytest.mark.parametrize(
    ("where", "loopback"),
    [
        ("postgresql://app@127.0.0.1:5432/evals", True),
        ("postgresql://app@localhost/evals", True),
        ("postgresql:///evals", True),  # a Unix socket: this machine's server
        ("postgresql://app@/evals?host=/var/run/postgresql", True),
        ("postgresql://app@db.internal:5432/evals", False),
        ("postgresql://app@10.0.0.5/evals", False),
        ("http://127.0.0.1:4318", True),
        ("http://collector:4318", False),
    ],
)
def test_loopback_store_addresses_are_recognised(where: str, loopback: bool) -> None:
    assert _is_loopback(where) is loopback
