"""``ragtrail serve``: run the OTLP trace receiver in the foreground."""

from __future__ import annotations

import signal
import threading
from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt


def _log_to_stderr(level: str) -> None:
    """The receiver's warnings (lost writes, refused spans) on stderr: the library logger has a NullHandler."""
    import logging

    from ragtrail._exceptions import ConfigError

    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ConfigError(f"--log-level {level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR")
    log = logging.getLogger("ragtrail")
    if not any(getattr(h, "_ragtrail_serve", False) for h in log.handlers):
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._ragtrail_serve = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(value)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default; 0.0.0.0 for all)."),
    http_port: int = typer.Option(4318, "--http-port", help="OTLP/HTTP port (/v1/traces); -1 disables it."),
    grpc_port: int = typer.Option(4317, "--grpc-port", help="OTLP/gRPC port; -1 disables it."),
    store: Optional[str] = StoreOpt,
    token: Optional[str] = typer.Option(
        None,
        "--token",
        envvar="RAGTRAIL_SERVE_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' on every request (also $RAGTRAIL_SERVE_TOKEN).",
    ),
    max_body_bytes: int = typer.Option(
        16 * 1024 * 1024, "--max-body-bytes", help="Largest request accepted (413 above)."
    ),
    queue_size: int = typer.Option(
        100_000, "--queue-size", help="Most spans waiting for the store; beyond it senders get 429 + Retry-After."
    ),
    project: str = typer.Option("default", "--project", "-p", help="Project of received spans that name none."),
    log_level: str = typer.Option(
        "INFO", "--log-level", envvar="RAGTRAIL_LOG_LEVEL", help="Level of the 'ragtrail' log on stderr."
    ),
    retention: Optional[str] = typer.Option(
        None,
        "--retention",
        envvar="RAGTRAIL_RETENTION",
        help="Prune traces older than this (30d, 12h…) every --retention-every; referenced traces are kept.",
    ),
    retention_every: str = typer.Option("1h", "--retention-every", help="How often the retention prune runs."),
) -> None:
    """Receive OTLP traces (HTTP protobuf/JSON on 4318, gRPC on 4317) and write them into the store."""
    from importlib.util import find_spec

    from ragtrail._exceptions import MissingDependencyError

    def absent(module: str) -> bool:
        try:
            return find_spec(module) is None
        except ModuleNotFoundError:  # a dotted name whose parent package is missing (google.protobuf)
            return True

    missing = [m for m in ("fastapi", "uvicorn", "grpc", "google.protobuf") if absent(m)]
    if missing or absent("opentelemetry.proto"):
        raise MissingDependencyError(
            f"ragtrail serve needs the otlp extra ({', '.join(missing) or 'opentelemetry-proto'} missing): "
            "pip install 'ragtrail[otlp]'"
        )
    from ragtrail.server import Receiver

    _log_to_stderr(log_level)

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        typer.secho(
            f"warning: listening on {host} without --token: anyone who can reach this port can write traces",
            err=True, fg=typer.colors.YELLOW,
        )  # fmt: skip
    receiver = Receiver(
        store,
        host=host,
        http_port=None if http_port < 0 else http_port,
        grpc_port=None if grpc_port < 0 else grpc_port,
        token=token,
        max_body_bytes=max_body_bytes,
        queue_size=queue_size,
        project=project,
    ).start()
    where = []
    if receiver.http_port is not None:
        where.append(f"OTLP/HTTP http://{host}:{receiver.http_port}/v1/traces")
        where.append(f"web UI http://{host}:{receiver.http_port}/ui/")
    if receiver.grpc_port is not None:
        where.append(f"OTLP/gRPC {host}:{receiver.grpc_port}")
    typer.echo(f"ragtrail serve: {' and '.join(where)} → {receiver.store.url}  (Ctrl-C to stop)")
    stop = threading.Event()
    if retention:  # the automatic retention policy (issue 16)
        from ragtrail.store._retention import parse_age, start_retention

        start_retention(receiver.store, retention, every_s=parse_age(retention_every), stop=stop)

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        ok = receiver.stop()
        st = receiver.stats()
        typer.echo(
            f"ragtrail serve: stopped; {st['spans_written']} spans written "
            f"({st.get('spans_duplicates', 0)} re-sent duplicates not stored again), {st['spans_failed']} failed, "
            f"{st['busy']} requests refused while busy"
        )
        if not ok:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("serve")(serve)
